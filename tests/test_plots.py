"""The PNGs kvplan writes, checked by structure (the matplotlib figure objects): `sweep --plot` and
`simulate --plot` (issue 19.5)."""

import pytest

pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")

from kvplan.hardware import find_gpu  # noqa: E402
from kvplan.model import load_model  # noqa: E402
from kvplan.plan import Deployment  # noqa: E402
from kvplan.report.simulate_plot import simulation_figure  # noqa: E402
from kvplan.report.sweep_plot import CONFIG_COLUMNS, styles_for, users_vs_context_figure  # noqa: E402
from kvplan.simulation.run import simulate  # noqa: E402
from kvplan.simulation.workload import Distribution, SyntheticWorkload  # noqa: E402
from kvplan.sweep import SweepGrid, run_sweep  # noqa: E402

MODELS = ("llama-3.1-8b", "qwen3-32b", "qwen3-8b")
GPUS = ("H100", "L40S", "L4", "A100-80GB")
CONTEXTS = tuple(1024 * 2 ** i for i in range(8))  # 1k .. 128k


@pytest.fixture(scope="module")
def sweep():
    return run_sweep(SweepGrid(models=MODELS, gpus=tuple(find_gpu(g) for g in GPUS), contexts=CONTEXTS))


def series(ax):
    """The configuration lines (vertical markers and the like are unlabelled)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_sweep_plot_structure(sweep):
    frame = sweep.frame
    fig, configurations = users_vs_context_figure(frame, sweep.model_max_tokens)
    ax = fig.axes[0]
    assert configurations == len(MODELS) * len(GPUS) == 12

    # independently: per configuration, the rows within the model's max context; those with no user anywhere
    expected = {}
    for key, g in frame.groupby(list(CONFIG_COLUMNS), observed=True):
        g = g[g["context_tokens"] <= load_model(key[0]).spec.max_position_embeddings].sort_values("context_tokens")
        expected[key] = (tuple(g["context_tokens"]), tuple(g["max_concurrent_users"]))
    never = {k for k, (_, users) in expected.items() if not any(users)}
    distinct = {v for k, v in expected.items() if k not in never}
    lines = series(ax)
    assert len(lines) == len(distinct)  # identical figures share a line
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == len(lines)  # every line looks different
    assert {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in lines} == distinct

    # lines stop at the model's max context; the max is marked once per value, naming its models
    for line in lines:
        model = line.get_label().split()[0]
        top = load_model(model).spec.max_position_embeddings
        assert max(line.get_xdata()) == max(c for c in CONTEXTS if c <= top)
    verticals = [line for line in ax.get_lines() if line.get_label().startswith("_")]
    assert sorted({line.get_xdata()[0] for line in verticals}) == [40_960, 131_072]
    notes = [t.get_text() for t in ax.texts]
    assert "qwen3-32b, qwen3-8b: max 40,960" in notes and "llama-3.1-8b: max 131,072" in notes

    # no request fits anywhere: named in the legend, not drawn along zero
    assert never == {k for k in expected if k[0] == "qwen3-32b" and k[1] in ("L40S", "L4")}
    assert legend_texts(ax)[-1] == "no request fits at any context:\nqwen3-32b L40S\nqwen3-32b L4"
    assert not any("qwen3-32b L4" == line.get_label() for line in lines)

    # what every line shares is in the title, not in each label; the legend sits outside the axes
    assert "(tp1, pp1, bf16 weights, bf16 KV)" in ax.get_title()
    assert all(text.count(" ") == 1 for text in legend_texts(ax)[:-1])
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 > 1


def test_sweep_plot_colours_and_dashes_mean_one_thing(sweep):
    lines = series(users_vs_context_figure(sweep.frame, sweep.model_max_tokens)[0].axes[0])
    by_gpu, by_model = {}, {}
    for line in lines:
        model, gpu = line.get_label().split()
        by_gpu.setdefault(gpu, set()).add(line.get_color())
        by_model.setdefault(model, set()).add(line.get_linestyle())
    assert all(len(c) == 1 for c in by_gpu.values()) and len({next(iter(c)) for c in by_gpu.values()}) == len(by_gpu)
    assert all(len(d) == 1 for d in by_model.values())


def test_identical_configurations_share_one_line(sweep):
    one = sweep.frame[(sweep.frame["model"] == "llama-3.1-8b") & (sweep.frame["gpu"] == "L40S")].copy()
    twin = one.copy()
    one["gpu"], twin["gpu"] = "L40S", "L40S-twin"
    frame = pd.concat([one, twin], ignore_index=True)
    fig, configurations = users_vs_context_figure(frame, sweep.model_max_tokens)
    lines = series(fig.axes[0])
    assert configurations == 2 and len(lines) == 1 and lines[0].get_label() == "L40S = L40S-twin"


def test_many_configurations_get_distinct_styles():
    configs = [(m, g, t) for m in range(6) for g in range(12) for t in (1, 2)]  # 144: no clean mapping
    styles = styles_for(configs, ("model", "gpu", "tp"))
    assert len(set(styles)) == len(configs)
    configs = [(m, g) for m in range(4) for g in range(10)]  # colour by gpu, dash by model
    styles = styles_for(configs, ("model", "gpu"))
    assert len(set(styles)) == 40 and len({s[0] for s in styles}) == 10 and len({s[1] for s in styles}) == 4


def test_simulate_plot_structure():
    loaded = load_model("llama-3.1-8b")
    dep = Deployment(gpu=find_gpu("H100"), max_model_len=4096, max_num_seqs=64)
    work = SyntheticWorkload(200, Distribution.parse("200", "prompt"), Distribution.parse("50", "output"))
    report = simulate(loaded, dep, work)
    d = report.to_dict()
    fig = simulation_figure(report)
    blocks, running, util = fig.axes
    pool = [line for line in blocks.get_lines() if line.get_label().startswith("pool")]
    assert len(pool) == 1 and set(pool[0].get_ydata()) == {d["num_blocks"]}
    assert pool[0].get_zorder() > max(line.get_zorder() for line in blocks.get_lines() if line is not pool[0])
    assert blocks.get_ylim()[1] > d["num_blocks"]  # the pool line is inside the axes, not on its edge
    assert [c.get_label() for c in blocks.collections] == ["paged: holding tokens", "contiguous: holding tokens"]
    cap = [line for line in running.get_lines() if line.get_label().startswith("--max-num-seqs")]
    assert len(cap) == 1 and set(cap[0].get_ydata()) == {64}
    paged = next(line for line in running.get_lines() if line.get_label() == "paged")
    assert max(paged.get_ydata()) == d["peak_concurrency"] == 64
    for line in util.get_lines():
        assert all(0 <= y <= 1 for y in line.get_ydata())
    assert {line.get_label() for line in util.get_lines()} == {
        f"paged (mean {100 * d['memory_utilization']:.1f}%)",
        f"contiguous (mean {100 * d['contiguous']['memory_utilization']:.1f}%)"}
    for ax in fig.axes:
        assert ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted()).x0 > 1
