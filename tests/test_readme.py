"""The README's Python example runs as written."""
import pathlib
import re


def test_readme_example_runs():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (8, 10)
    assert namespace["report"].latency == 13.0
