"""Feedback spiking networks trained through their equilibrium state: IDE (Xiao et al.,
NeurIPS 2021) and SPIDE (Xiao et al., Neural Networks 2023).

    net = ttfs_ext.spide.convnet_f(backward="spide")   # or FeedbackSNN(input, layers, feedback, readout)
    loss = F.cross_entropy(net(x), y); loss.backward()    # gradients in p.grad, as any module

The neuron steps are the compiled ops ttfs_ext.functional.spide_forward_step /
spide_backward_step (reference: ttfs_ext.reference); the training command is `ttfs spide`.
"""
from .models import MODELS, alexnet_f, build, cifarnet_f, convnet_f, f400, lenet5_f
from .network import Connection, FeedbackSNN, SaturationWarning, sigma
from .solvers import ConvergenceError, NonConvergenceWarning, SolveResult, anderson, broyden, fixed_point, solve

__all__ = ["FeedbackSNN", "Connection", "sigma", "SaturationWarning", "ConvergenceError", "NonConvergenceWarning",
           "SolveResult", "anderson", "broyden", "fixed_point", "solve", "MODELS", "build", "convnet_f", "lenet5_f", "f400",
           "alexnet_f", "cifarnet_f"]
