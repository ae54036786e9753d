"""Training TTFS networks (Stanojevic et al. 2024): a B1 network trains exactly like its
ReLU twin.

    net = fc2()                                   # 784-340-10, windows chained
    twin = relu_twin(copy.deepcopy(net))          # nn.Sequential with the same function
    history = fit(net, data, epochs=5, twin=twin, windows=CalibratedWindows())

- Models: fc2() and vgg() (the papers' VGG-like nets), or any TTFSSequential; for Places365
  (vgg16.py): vgg16_relu() in torchvision's layout, load_relu_checkpoint(), ttfs_vgg16()
  (the exact conversion), build_places365_model(name, ...) for the training CLI, and
  ttfs_skeleton() + load_ttfs_state() to resume without converting again.
- relu_twin(net): the ReLU network that computes the same function with the same parameter
  objects (Linear/Conv2d + ReLU, max-pool, flatten).
- Windows: PaperWindows (the reference code: after each step, width = max(width, 10 x the
  largest activation of the batch); only grows) or CalibratedWindows ((1 + zeta) x a running
  maximum, or quantile, of the activations: small windows, small latency).
- fit(): per-epoch loss, accuracy, spikes per neuron (per layer and overall), latency and
  margins for the SNN and, side by side, the ReLU twin; atomic checkpoints every epoch,
  exact resume, seeded data order, progress bars (tqdm when installed).

Files: models.py (fc2, vgg), vgg16.py (VGG16 for Places365), twin.py (relu_twin), windows.py (window rules), metrics.py
(forward_with_stats, evaluate, EpochMetrics, History), checkpoints.py, loop.py (fit).
"""

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .loop import fit, make_optimizer, seed_everything
from .metrics import EpochMetrics, History, evaluate, forward_with_stats
from .models import VGG_CIFAR, VGG_MNIST, fc2, vgg
from .twin import relu_twin
from .vgg16 import (PLACES365_MODELS, CheckpointMismatch, build_places365_model, load_relu_checkpoint,
                    load_ttfs_state, normalized_input_range, ttfs_skeleton, ttfs_vgg16, vgg16_relu)
from .windows import WINDOW_RULES, CalibratedWindows, FixedWindows, PaperWindows

__all__ = ["fc2", "vgg", "relu_twin", "PaperWindows", "CalibratedWindows", "FixedWindows", "forward_with_stats",
           "evaluate", "fit", "EpochMetrics", "History", "save_checkpoint", "load_checkpoint", "CheckpointError",
           "VGG_MNIST", "VGG_CIFAR", "WINDOW_RULES", "make_optimizer", "seed_everything", "vgg16_relu",
           "load_relu_checkpoint", "CheckpointMismatch", "normalized_input_range", "ttfs_vgg16",
           "build_places365_model", "PLACES365_MODELS", "ttfs_skeleton", "load_ttfs_state"]
