# Stage `evaluate`: encode, classify, place unseen classes, embed, interpolate.


rule evaluate:
    input:
        f"{RUN}/eval/metrics.json",
