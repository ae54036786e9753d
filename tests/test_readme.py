"""The README's Python example runs as written."""
import pathlib
import re


def test_readme_example_runs():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    namespaces = []
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        namespaces.append(namespace)
    modules, training, conversion, feedback = namespaces
    assert training["history"].epochs[-1].test_accuracy > 0.5
    assert training["history"].step_losses == training["history"].twin_step_losses or max(
        abs(a - b) / b for a, b in zip(training["history"].step_losses, training["history"].twin_step_losses)) < 1e-9
    assert modules["logits"].shape == (8, 10)
    assert modules["report"].latency == 13.0
    assert conversion["check"].agreement == 1.0 and conversion["check"].max_logit_diff < 1e-9
    assert all(p.grad is not None for p in feedback["net"].parameters()) and feedback["rates"]["backward_rate"] >= 0
