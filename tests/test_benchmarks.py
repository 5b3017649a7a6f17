"""The benchmark harness: medians by timeit, the scaling/pipeline tables, the SHREC projection
from the tables, the BENCHMARKS.md writer, the GPU entry's code path on the CPU, and (slow) the
whole ``python -m benchmarks --quick`` run. No timing assertions: only what the figures mean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import _common, bench_pipeline, projection, report

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def out(tmp_path, monkeypatch):
    """results.json / scaling.json redirected into tmp_path (never the files of record)."""
    monkeypatch.setattr(_common, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(_common, "SCALING", tmp_path / "scaling.json")
    return tmp_path


def test_timed_is_the_median_of_repeats_and_returns_the_last_result(monkeypatch):
    calls = []
    monkeypatch.setattr(_common.timeit, "repeat",
                        lambda fn, repeat, number: [fn(), fn(), fn()] and [5.0, 1.0, 3.0])
    seconds, last = _common.timed(lambda: calls.append(len(calls)) or len(calls), repeat=3)
    assert seconds == 3.0            # the median, not the best (1.0)
    assert last == len(calls) == 3   # the last call's result


def test_record_and_record_table_keep_their_contracts(out):
    fig = _common.record("x_s", 2.0, "s", baseline=8.0, target="< 5 s")
    assert fig["ratio"] == 4.0 and fig["target"] == "< 5 s"
    _common.record_table("t", ["a", "b"], [[1, 2.5]], note="n", quick=True)
    data = json.loads((out / "scaling.json").read_text())
    assert data["t"]["rows"] == [[1, 2.5]] and data["t"]["quick"] is True
    assert set(json.loads((out / "results.json").read_text())) == {"x_s"}


def test_discovery_keeps_opt_in_and_quick_apart():
    found = bench_main.discover()
    assert found["pipeline"]["opt_in"] and not found["scaling"]["opt_in"]
    assert found["scaling"]["quick"] and found["gpu"]["quick"]
    default = bench_main.chosen([], found, quick=False, pipeline=False)
    assert "pipeline" not in default and "scaling" in default
    assert "pipeline" in bench_main.chosen([], found, quick=False, pipeline=True)
    quick = bench_main.chosen([], found, quick=True, pipeline=False)
    assert set(quick) == {n for n, f in found.items() if f["quick"] and not f["opt_in"]}
    with pytest.raises(KeyError, match="nope"):
        bench_main.chosen(["nope"], found, quick=False, pipeline=False)


def test_pipeline_stage_table_sums_each_stages_jobs(tmp_path):
    bench = tmp_path / "benchmarks"
    head = "s\th:m:s\tmax_rss\n"
    for stage, job, s in [("train", "avae", 60.0), ("train", "bvae", 40.0),
                          ("denoise", "model_0", 30.0), (None, "figures", 10.0)]:
        f = bench / stage / f"{job}.tsv" if stage else bench / f"{job}.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(head + f"{s}\t0:01:00\t100\n")
    stages = bench_pipeline.stage_seconds(bench)
    assert stages == {"train": {"jobs": 2, "seconds": 100.0, "longest": 60.0},
                      "denoise": {"jobs": 1, "seconds": 30.0, "longest": 30.0},
                      "figures": {"jobs": 1, "seconds": 10.0, "longest": 10.0}}
    rows = bench_pipeline.stage_rows(stages, wall=100.0)
    assert [r[0] for r in rows] == ["train", "denoise", "figures"]   # largest first
    col = {c: i for i, c in enumerate(bench_pipeline.COLUMNS)}
    assert sum(r[col["share_of_job_time"]] for r in rows) == pytest.approx(1.0)
    assert rows[0][col["seconds_per_wall"]] == pytest.approx(1.0)    # 100 s of job time / wall
    assert rows[0][col["longest_job_s"]] == 60.0


def synthetic_scaling() -> dict:
    """Tables following exact laws: extract 1e-8 V + 1e-3 P + 0.5 s, denoise 1e-6 s per voxel,
    train 100 samples/s at box 32, SOAP 1 s per class pair, evaluate 100 s its longest job."""
    def t(columns, rows, quick=False):
        return {"columns": columns, "rows": rows, "note": "synthetic", "quick": quick,
                "date": "2026-01-01", "machine": "test"}
    ex = [[s, p, 1e-8 * s ** 3 + 1e-3 * p + 0.5, 100.0] for s in (128, 256) for p in (100, 400)]
    return {
        "extract": t(["size", "particles", "seconds", "peak_rss_mb"], ex),
        "denoise": t(["size", "patch", "seconds", "peak_rss_mb", "runs"],
                     [[s, 128, 1e-6 * s ** 3, 500.0, 3] for s in (128, 256)]),
        "train": t(["decoder", "box", "batch", "samples_per_s", "peak_rss_mb"],
                   [["cnn", 32, 32, 100.0, 400.0], ["cnn", 64, 32, 12.5, 900.0],
                    ["gmd", 32, 32, 50.0, 500.0]]),
        "gmd": t(["M", "grid", "seconds", "peak_mem_mb"], [[128, 32, 0.03, 30.0]]),
        "affinity": t(["method", "classes", "seconds", "peak_rss_mb"],
                      [["soap", 2, 4.0, 200.0], ["fsc", 2, 9.0, 200.0]]),
        "pipeline": t(bench_pipeline.COLUMNS, [["evaluate", 3, 205.0, 100.0, 0.2, 0.3]]),
    }


def test_projection_follows_the_stated_formulas():
    sc = synthetic_scaling()
    threads = {"denoise_tomogram": 2, "train_model": 1}
    proj = projection.project(sc, {}, sc["pipeline"], threads)
    rows = {r["stage"]: r for r in proj["rows"]}
    shrec = projection.SHREC
    per_tomo = shrec["particles"] / shrec["tomograms"]
    assert rows["extract"]["cpu_job_s"] == pytest.approx(1e-8 * 512 ** 3 + 1e-3 * per_tomo + 0.5)
    assert rows["denoise"]["cpu_job_s"] == pytest.approx(1e-6 * 512 ** 3)
    assert rows["affinity"]["cpu_job_s"] == pytest.approx(4.0 * (13 / 2) ** 2)
    train = projection.defaults("train")
    n_train = shrec["particles"] * (1 - train["validation_fraction"])
    assert rows["train"]["cpu_job_s"] == pytest.approx(train["epochs"] * n_train / 100.0)
    sim = {**projection.defaults("simulate"), **projection._demo_config()["simulate"]}
    assert rows["evaluate"]["cpu_job_s"] == pytest.approx(
        100.0 * shrec["particles"] / (sim["n_tomograms"] * sim["n_particles"]))
    assert rows["denoise"]["parallel"] == shrec["tomograms"] and rows["train"]["jobs"] == 2
    w = {k: r["cpu_job_s"] for k, r in rows.items()}
    assert proj["cpu_total_s"] == pytest.approx(
        max(w["denoise"] + w["extract"], w["affinity"]) + w["train"] + w["evaluate"])
    assert proj["gpu_total_s"] is None          # no GPU figure: never invented
    gpu = {"gpu_train_cnn_fp32_samples_per_s": {"value": 1000.0},
           "gpu_denoise_512^3_s": {"value": 10.0}}
    proj = projection.project(sc, gpu, sc["pipeline"], threads)
    g = {r["stage"]: r["gpu_job_s"] for r in proj["rows"]}
    assert g["train"] == pytest.approx(rows["train"]["cpu_job_s"] / 10) and g["denoise"] == 10.0
    assert proj["gpu_total_s"] < proj["cpu_total_s"]
    rows = projection.project(sc, {}, None, threads, {"train_model": {"runtime": 720}})["rows"]
    assert {r["stage"]: r["runtime_min"] for r in rows}["train"] == 720


def test_report_renders_every_section_and_table():
    sc = synthetic_scaling()
    sc["gmd"]["quick"] = True
    sc["tm_vs_angular_step"] = {**sc["gmd"], "columns": ["step_deg"], "rows": [[15]]}
    results = {"extract_2000_boxes_time": {"value": 4.5, "unit": "s", "baseline": 9.0,
                                           "ratio": 2.0, "target": "< 5 s", "date": "d"}}
    baseline = {"wall_s": 600.0, "source": "before-run", "columns": bench_pipeline.COLUMNS,
                "rows": [["train", 2, 400.0, 250.0, 0.7, 0.67]]}
    proj = projection.project(sc, results, sc["pipeline"], {})
    text = report.render(results, sc, baseline, {"CPU": "TestCPU", "cores": "2"}, proj,
                         quick=True)
    for heading in ("## Machine", "## Figures", "## Scaling tables", "### extract",
                    "### denoise", "### train", "### gmd", "### affinity",
                    "### tm_vs_angular_step",
                    "## Default pipeline", "## GPU", "## SHREC 2021 projection"):
        assert heading in text
    assert "QUICK RUN" in text and "### gmd **(quick sizes" in text
    assert "| extract_2000_boxes_time | 4.5 | s | 9 | 2 | < 5 s |" in text
    assert "| TestCPU |" in text and "before-run" in text
    assert text.count("not measured") >= len(report.GPU_ROWS)   # every GPU row
    assert "| cnn | 64 | 32 | 12.5 | 900 |" in text                # a scaling row as given
    assert "extract   t(V, P) = a V + b P + c" in text              # the formulas, stated


def test_gpu_entry_skips_in_one_line_without_cuda(out, monkeypatch, capsys):
    import torch

    from benchmarks import bench_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 0
    assert capsys.readouterr().out.strip() == bench_gpu.SKIP_LINE
    assert not (out / "results.json").exists()


def test_gpu_entry_code_path_runs_on_the_cpu(out, monkeypatch):
    """The same figures as on CUDA (fp32 + bf16 autocast training, renderer, denoise) at tiny
    sizes on the CPU, in this process."""
    from benchmarks import _cases, bench_gpu

    monkeypatch.setattr(bench_gpu, "run_child",
                        lambda module, kind, params: _cases.KINDS[kind](**json.loads(params)))
    assert bench_gpu.main(["--quick", "--device", "cpu"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {"cpu_train_cnn_fp32_samples_per_s", "cpu_train_cnn_bf16_samples_per_s",
            "cpu_gmd_render_M16_16^3_s", "cpu_denoise_32^3_s"} <= set(res)
    assert all(v["value"] > 0 for v in res.values())
    assert "bf16 autocast" in res["cpu_train_cnn_bf16_samples_per_s"]["note"]


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """``python -m benchmarks --quick``: every scaling table (marked quick) and a labelled
    BENCHMARKS.md, all under AVAE_BENCH_OUT."""
    env = {**os.environ, "AVAE_BENCH_OUT": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], cwd=REPO, env=env,
                   check=True, capture_output=True, text=True)
    tables = json.loads((tmp_path / "scaling.json").read_text())
    expected = {"extract", "denoise", "train", "gmd"} | (
        {"affinity"} if (REPO.parent / "shared" / "data" / "shrec2021-structures").is_dir()
        else set())
    assert expected <= set(tables) and all(tables[t]["quick"] for t in expected)
    assert all(len(tables[t]["rows"]) >= 1 for t in expected)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "QUICK RUN" in text and "## SHREC 2021 projection" in text


def test_size_overrides_keep_types_and_leave_the_defaults_alone():
    from benchmarks import bench_scaling

    sizes = bench_scaling.apply_overrides(bench_scaling.FULL,
                                          ["denoise.sizes=128,256", "train.steps=2"])
    assert sizes["denoise"]["sizes"] == [128, 256] and sizes["train"]["steps"] == 2
    assert bench_scaling.FULL["denoise"]["sizes"] == [128, 256, 512]


def test_a_failed_case_leaves_none_and_the_projection_skips_it(out, monkeypatch):
    from benchmarks import bench_scaling

    def fail(*args, **kwargs):
        raise subprocess.CalledProcessError(1, "x", stderr="MemoryError")

    monkeypatch.setattr(bench_scaling, "run_child", fail)
    bench_scaling.gmd_table({"ms": [16], "grids": [16], "repeat": 1}, quick=True)
    table = json.loads((out / "scaling.json").read_text())["gmd"]
    assert table["rows"] == [[16, 16, None, None]]
    sc = synthetic_scaling()
    sc["denoise"]["rows"].append([512, 128, None, None, 1])   # the 512^3 case failed
    rows = {r["stage"]: r for r in projection.project(sc, {}, None, {})["rows"]}
    assert rows["denoise"]["cpu_job_s"] == pytest.approx(1e-6 * 512 ** 3)  # from 256^3
    assert rows["denoise"]["peak_mem"] == "500 MB at size 256"
    assert rows["evaluate"]["cpu_job_s"] is None                 # no pipeline table
