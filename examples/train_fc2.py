"""Train FC2 (784-340-10) on Fashion-MNIST for one epoch, its ReLU twin side by side.

    python examples/train_fc2.py                 # Fashion-MNIST from $TTFS_EXT_DATA, ~/.cache or /usr/share/datasets
    python examples/train_fc2.py --download      # fetch it first (MD5-checked)
    python examples/train_fc2.py --quick         # scikit-learn's digits, a few hundred images: seconds
"""
import argparse
import copy

from ttfs_ext import data, train

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--download", action="store_true")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()

if args.quick:
    ds = data.subset(data.load_digits(), n_train=256, n_test=128)
else:
    ds = data.load_dataset("fashion-mnist", download=args.download)  # the error says where to put the files
print(ds.summary())

c, h, w = ds.input_shape
net = train.fc2(c * h * w, 340, ds.classes, input_shape=ds.input_shape).double()
twin = train.relu_twin(copy.deepcopy(net))  # the same function with ReLUs, same initial parameters
# float64: the SNN and its twin take the same steps, so their accuracies agree to rounding
history = train.fit(net, ds, epochs=1, lr=5e-4, twin=twin, windows=train.CalibratedWindows(zeta=0.5),
                    progress=not args.quick)
last = history.epochs[-1]
print(f"SNN test accuracy {last.test_accuracy:.2%}, ReLU twin {last.twin_test_accuracy:.2%}, "
      f"{last.spikes_per_neuron:.3f} spikes per neuron, latency {last.latency:.3g}")
