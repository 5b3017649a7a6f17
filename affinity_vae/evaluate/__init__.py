"""Stage `evaluate`: encode every particle, classify the seen classes, place the unseen ones,
compare the learned latent geometry with the affinity prior, embed (UMAP, t-SNE), decode pose
sweeps and latent interpolations, and score the pose channel.

Modules: latents (the table), encode (torch), classify (the one classifier grid, also predict's),
metrics, unseen (prior vs learned and unseen placement), embed, interpolate, pose, averages,
figs/plots (figures), tables (files written), analyse (torch-free analysis of the latents),
model_eval (the parts that need the trained model), run (the rules' entry points).
Entry points, one a rule: :func:`affinity_vae.evaluate.run.main_variant` (scripts/evaluate.py,
rules ``evaluate_avae``/``evaluate_bvae``) and :func:`affinity_vae.evaluate.run.main_summary`
(scripts/evaluate_summary.py, rule ``evaluate_summary``).
"""
