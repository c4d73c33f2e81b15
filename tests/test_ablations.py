"""Ablation grid definitions, the runner's de-duplication, statistics, and the figures."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ckdlab import results as stats
from ckdlab.profiles import load_profile, merge
from ckdlab.studies import ablations as ab


def test_reduced_quick_grid_expands_to_the_right_runs():
    cells = ab.expand_grid("quick", "reduced")
    assert {(c.group, c.variant) for c in cells} == {
        ("weighting", "default"), ("weighting", "weights 1"), ("weighting", "official"), ("weighting", "balanced (grad)"),
        ("weighting", "balanced (loss)"), ("weighting", "logit KD only"),
        ("relations", "WR + LTR"), ("relations", "WR only"), ("relations", "LTR only"),
        ("logit KD", "with KD"), ("logit KD", "without KD (CE)"),
    }
    assert len(cells) == 1 * 2 * 11  # task x seeds x cells
    distinct = ab.distinct_runs(cells)
    assert len(distinct) == 2 * 9  # "WR + LTR" and "with KD" are the weighting group's "default"
    by_variant = {c.variant: c for c in cells if c.seed == 0}
    assert by_variant["with KD"].label == by_variant["WR + LTR"].label == by_variant["default"].label == "weighting: default"
    assert by_variant["official"].options["weights"] == "official"
    assert by_variant["logit KD only"].options["objective"] == "kd"
    # CKD weights not named are left to the default weighting; named ones are fixed
    assert by_variant["WR only"].options["weights"] == {"kd": 1.0, "ltr_pair": 0.0, "ltr_triplet": 0.0}
    assert by_variant["LTR only"].options["weights"]["wr_pair"] == 0.0
    no_kd = by_variant["without KD (CE)"].options
    assert no_kd["objective"] == "ckd+ce" and "kd" not in no_kd["weights"]


def test_full_quick_grid():
    cells = ab.expand_grid("quick", "full")
    assert {c.task for c in cells} == {"sst2", "mrpc", "rte"} and {c.seed for c in cells} == {0, 1, 2}
    per_task_seed = [c for c in cells if c.task == "sst2" and c.seed == 0]
    groups = {g for g, *_ in ((c.group,) for c in per_task_seed)}
    assert groups == {"weighting", "pair relation", "relations", "pair vs triplet", "logit KD", "layer map", "triplet window",
                      "pair metric", "CoDIR", ab.SWEEP_GROUP}
    assert len(per_task_seed) == 6 + 3 + 3 + 3 + 2 + 3 + 4 + 2 + 5 + 9
    # Eight cells are the default configuration (every group's default variant: weighting, pair relation,
    # WR + LTR, pair + triplet, with KD, uniform, all triplets, cos) and the sweep's λ = (1, 1) is
    # "weights 1": 35 CKD cells, 27 distinct runs; the CoDIR group's five variants share none of them.
    assert len(ab.distinct_runs(per_task_seed)) == 27 + 5
    assert len(ab.distinct_runs(cells)) == 32 * 9
    options = {(c.group, c.variant): c.options for c in per_task_seed}
    assert options[("triplet window", "w=5")]["objective_options"] == {"pair_metric": "cos", "window": 5}
    assert options[("pair metric", "l2")]["objective_options"]["pair_metric"] == "l2"
    assert options[("layer map", "skip")]["layer_map"] == "skip"
    last = options[("layer map", "last (WR only)")]
    assert last["layer_map"] == "last" and last["weights"]["ltr_pair"] == last["weights"]["ltr_triplet"] == 0.0
    sweep = [c for c in per_task_seed if c.group == ab.SWEEP_GROUP]
    assert {(c.coords["lambda_wr"], c.coords["lambda_ltr"]) for c in sweep} == set(itertools.product([0.1, 1.0, 10.0], repeat=2))
    for c in sweep:
        w = c.options["weights"]
        assert w["wr_pair"] == w["wr_triplet"] == c.coords["lambda_wr"] and w["ltr_pair"] == w["ltr_triplet"] == c.coords["lambda_ltr"]


def test_every_variant_builds_a_valid_objective():
    from ckdlab.objectives.registry import default_weights, parse_objective

    from ckdlab.objectives.registry import check_options

    for profile in ("smoke", "quick", "paper"):
        for grid in ab.GRIDS:
            for _, _, options, _ in ab.variants(profile, grid):
                names = parse_objective(options["objective"])
                assert options["weights"] == "official" or set(options["weights"]) <= set(default_weights(names))
                check_options(names, options["objective_options"])


def test_bad_grid_names():
    with pytest.raises(ValueError, match="grid="):
        ab.expand_grid("quick", "huge")
    with pytest.raises(FileNotFoundError, match="profile 'nonsense' not found"):
        ab.expand_grid("nonsense", "reduced")
    settings = load_profile("quick")
    settings["ablations"]["grids"]["reduced"]["groups"] = ["relations", "colour"]
    with pytest.raises(ValueError, match="colour"):
        ab.expand_grid(settings, "reduced")


def test_merge_is_deep_and_does_not_alias():
    base = {"a": {"x": 1, "y": 2}, "b": [1]}
    out = merge(base, {"a": {"y": 3}, "b": [2]})
    assert out == {"a": {"x": 1, "y": 3}, "b": [2]} and base == {"a": {"x": 1, "y": 2}, "b": [1]}


def test_runner_trains_each_distinct_configuration_once(monkeypatch):
    calls = []

    def fake_distill(task, **kwargs):
        calls.append((task, kwargs["seed"], kwargs["method"]))
        return {"score": 0.5 + 0.01 * len(calls), "params": 100, "latency_ms": 1.0}

    monkeypatch.setattr(ab, "distill", fake_distill)
    frame = ab.run_ablations("quick", "reduced", reuse=False)
    assert len(calls) == len(set(calls)) == 18
    assert len(frame) == 22
    shared = frame[frame["label"] == "weighting: default"]
    assert set(shared["variant"]) == {"default", "WR + LTR", "with KD"}
    assert (shared.groupby("seed")["score"].nunique() == 1).all()


def test_t_interval_and_compare():
    mean, half, n = stats.t_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert math.isnan(stats.t_interval([1.0])[1])
    rows = []
    for seed in range(4):
        for task in ("sst2", "rte"):
            rows.append({"group": "g", "variant": "base", "task": task, "seed": seed, "score": 0.80 + 0.001 * seed})
            rows.append({"group": "g", "variant": "better", "task": task, "seed": seed, "score": 0.85 + 0.002 * seed})
            rows.append({"group": "g", "variant": "noisy", "task": task, "seed": seed, "score": 0.80 + (0.05 if seed % 2 else -0.05)})
    frame = pd.DataFrame(rows)
    better = stats.compare(frame, "better", "base")
    diffs = [0.05 + 0.001 * s for s in range(4)]
    assert better["diff"] == pytest.approx(np.mean(diffs)) and better["n"] == 4 and better["distinguishable"]
    assert "beats base by 5.1 ± 0.2 points (95% CI, 4 seeds)" in stats.describe_comparison(better)
    noisy = stats.compare(frame, "noisy", "base")
    assert not noisy["distinguishable"] and "not distinguishable" in stats.describe_comparison(noisy)
    one = stats.compare(frame[frame["seed"] == 0], "better", "base")
    assert "no conclusion" in stats.describe_comparison(one)
    with pytest.raises(ValueError, match="not found"):
        stats.compare(frame, "better", "missing")
    lines = stats.group_conclusions(frame, "g")
    assert len(lines) == 2 and lines[0].startswith("better beats base")


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"params": rng.integers(1, 20, 40), "score": rng.random(40).round(2)})
    front = stats.pareto_front(frame)
    for i, row in frame.iterrows():
        beaten = any((o.params <= row.params and o.score > row.score) or (o.params < row.params and o.score >= row.score)
                     for j, o in frame.iterrows() if j != i)
        assert (i in front.index) == (not beaten)
    assert list(front["params"]) == sorted(front["params"])


def synthetic_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for task, seed in itertools.product(("sst2", "rte"), (0, 1, 2)):
        for group, variants in (("relations", ("WR + LTR", "WR only")), ("pair metric", ("cos", "l2"))):
            for variant in variants:
                rows.append({"group": group, "variant": variant, "task": task, "seed": seed, "label": variant,
                             "score": 0.7 + 0.05 * rng.random(), "params": 1e6, "latency_ms": 3.0})
        for wr, ltr in itertools.product((0.1, 1.0, 10.0), repeat=2):
            rows.append({"group": ab.SWEEP_GROUP, "variant": f"{wr},{ltr}", "task": task, "seed": seed, "label": f"{wr},{ltr}",
                         "score": 0.6 + 0.01 * wr + 0.001 * ltr + 0.001 * seed, "params": 1e6, "latency_ms": 3.0,
                         "lambda_wr": wr, "lambda_ltr": ltr})
    return pd.DataFrame(rows)


def test_sweep_matrix_is_the_mean():
    frame = synthetic_frame()
    matrix = ab.sweep_matrix(frame)
    assert list(matrix.index) == [10.0, 1.0, 0.1] and list(matrix.columns) == [0.1, 1.0, 10.0]
    assert matrix.loc[1.0, 10.0] == pytest.approx(0.6 + 0.1 + 0.001 + 0.001)  # mean over seeds 0..2 of 0.001·seed
    with pytest.raises(ValueError, match="sweep"):
        ab.sweep_matrix(frame[frame["group"] != ab.SWEEP_GROUP])


def test_figures_build_from_a_synthetic_frame(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from ckdlab.viz.ablations import plot_ablation_bars, plot_dynabert, plot_pareto, plot_sweep_heatmap

    frame = synthetic_frame()
    fig = plot_ablation_bars(frame, save_to=tmp_path / "bars.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["relations", "pair metric"]
    plot_sweep_heatmap(ab.sweep_matrix(frame), save_to=tmp_path / "sweep.png")
    dyna = pd.DataFrame([{"task": "sst2", "method": m, "seed": s, "width": w, "depth": d, "student": f"w{w}_d{d}",
                          "score": 0.5 + 0.1 * w * d + 0.01 * s, "params": 1e6 * w * d, "latency_ms": 2 * w * d}
                         for m in ("DynaBERT loss", "CKD + KD") for s in (0, 1) for w in (0.25, 0.5, 1.0) for d in (0.5, 1.0)])
    fig = plot_dynabert(dyna, save_to=tmp_path / "dyna.png")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2
    plot_pareto(dyna, save_to=tmp_path / "pareto.png")
    for name in ("bars", "sweep", "dyna", "pareto"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="needs column"):
        plot_pareto(frame.drop(columns=["params"]))


@pytest.mark.slow
def test_notebook_05_smoke(tmp_path, monkeypatch):
    import nbformat
    import papermill

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    out = tmp_path / "05.ipynb"
    # The kernel inherits this: one intra-op thread avoids spin-waiting on a loaded 2-core machine.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    papermill.execute_notebook(str(notebooks / "05_ablations.ipynb"), str(out), parameters={"profile": "smoke"},
                               cwd=str(notebooks), kernel_name="python3", progress_bar=False)
    figures = tmp_path / "figures" / "smoke"
    for name in ("05_ablation_bars.png", "05_dynabert.png", "05_pareto.png"):
        assert (figures / name).exists()
    dyna = pd.read_csv(tmp_path / "results" / "smoke" / "05_dynabert_reduced.csv")
    assert len(dyna) == 2 * 2 * 12  # losses x seeds x sub-networks
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in nbformat.read(out, 4).cells if c.cell_type == "code" for o in c.outputs)
    assert "seeds" in text
