"""The plots show what their legends and titles claim: inspected through the matplotlib figure
each function draws (its artists), not only that a PNG was written."""
import pytest
import torch
from torch import nn

import ttfs_ext
from ttfs_ext import plots
from ttfs_ext.train.metrics import EpochMetrics, History

pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    drawn = []
    save = plots._save

    def keep(fig, plt, path):
        drawn.append(fig)
        fig.canvas.draw()  # tick labels are laid out
        return save(fig, type("NoClose", (), {"close": staticmethod(lambda f: None)}), path)
    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _epoch(i: int, gap: float = 0.0) -> EpochMetrics:
    return EpochMetrics(epoch=i, train_loss=1.0 / i, train_accuracy=0.5 + i / 10, test_loss=1.1 / i,
                        test_accuracy=0.5 + i / 11, twin_train_loss=1.0 / i + gap, twin_train_accuracy=0.5 + i / 10,
                        twin_test_loss=1.1 / i, twin_test_accuracy=0.5 + i / 11)


def test_curves_keep_snn_and_twin_apart_and_plot_every_step(figures, tmp_path):
    steps = [2.0 / (1 + 0.1 * s) for s in range(30)]
    history = History([_epoch(1), _epoch(2, gap=0.25), _epoch(3)], steps, [s + 1e-3 for s in steps])
    plots.plot_curves(history, tmp_path / "c.png")
    (fig,) = figures
    loss, acc = fig.axes
    lines = {line.get_label(): line for line in loss.get_lines()}
    twin = lines["ReLU twin train (epoch mean)"]
    assert twin.get_linestyle() == "None" and twin.get_marker() == "o" and twin.get_markerfacecolor() == "none"
    assert lines["SNN train (epoch mean)"].get_linestyle() == "-"
    assert len(lines["SNN train, per step (mean of 1)"].get_xdata()) == 30  # every step, not 3 points
    assert list(lines["SNN test"].get_xdata()) == [1, 2, 3]
    assert list(lines["SNN train (epoch mean)"].get_xdata()) == [0.5, 1.5, 2.5]  # a mean over the epoch
    assert "max |SNN - ReLU twin| over epochs: 0.25" in loss.get_title()
    assert all(float(t).is_integer() for t in acc.get_xticks())
    assert len(acc.get_legend().get_texts()) == 4


def test_raster_shows_every_neuron_and_names_the_layers(figures, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 4))
    x = torch.rand(64, 12)
    net = ttfs_ext.convert(model, x, input_range=(0.0, 1.0))
    plots.plot_raster(net, x[:1], tmp_path / "r.png")
    times = [(name, t[0], t_max) for name, t, _, t_max in plots._spike_times(net, x[:1])]
    spikes = int((net[0](x[:1]) < 1).sum()) + sum(int((t < t_max).sum()) for _, t, t_max in times)
    (fig,) = figures
    (ax,) = fig.axes
    assert sum(len(c.get_offsets()) for c in ax.collections) == spikes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 3 and labels[0].startswith("input\n") and "of 12 spiked" in labels[0]
    assert "of 40 spiked" in labels[1] and "of 30 spiked" in labels[2]
    assert ax.get_legend() is None and len(ax.get_lines()) == 2  # two layer boundaries
    assert f"{spikes} spikes of 82 neurons" in ax.get_title()
    plots.plot_raster(net, x[:1], tmp_path / "r2.png", max_neurons=10)
    assert "(every 4th shown)" in [t.get_text() for t in figures[-1].axes[0].get_yticklabels()][1]


def test_sweep_draws_error_bars_and_sample_sizes(figures, tmp_path):
    rows = [{"sweep": "noise", "value": v, "accuracy": 0.9 - v, "std": 0.01 * (v > 0), "repeats": 3,
             "images": 100} for v in (0, 0.1, 0.2)]
    rows += [{"sweep": "latency", "value": v, "accuracy": 0.8 * v, "closed_form_accuracy": 0.8, "images": 20}
             for v in (1, 0.5)]
    plots.plot_sweep(rows, tmp_path / "s.png")
    (fig,) = figures
    noise, latency = fig.axes
    assert noise.get_title() == "noise (100 test images)" and latency.get_title() == "latency (20 test images)"
    assert any(len(c.get_segments()) == 3 for c in noise.collections)  # the error bars
    assert {t.get_text() for t in latency.get_legend().get_texts()} == {"event-driven", "closed form"}
