"""The public API: `import ditkit` lists it, and every function's docstring example runs on a
tiny model."""

from __future__ import annotations

import doctest
import pydoc

import pytest

import ditkit
from ditkit.diffs import registry
from test_lora import random_diff
from test_pipeline import tiny_overrides

PUBLIC = {name: getattr(ditkit, name) for name in ditkit.__all__}
FUNCTIONS = {name: obj for name, obj in PUBLIC.items() if callable(obj)}
EXAMPLES = {
    name: [t for t in doctest.DocTestFinder(recurse=False).find(obj, name) if t.examples]
    for name, obj in FUNCTIONS.items()
}


def test_import_ditkit_lists_the_api():
    text = pydoc.render_doc(ditkit, renderer=pydoc.plaintext)
    for name in ditkit.__all__:
        assert name in text, name
    # the names are the functions, never the submodules that share a name with them
    assert all(type(obj).__name__ != "module" for obj in PUBLIC.values())
    assert {"describe", "audit", "run", "load_reader", "attack", "align"} <= set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_api_example_runs(name, tiny_model_dir, tmp_path):
    assert EXAMPLES[name], f"ditkit.{name} has no example in its docstring"
    for test in EXAMPLES[name]:
        test.globs = {
            **{n: getattr(ditkit, n) for n in ditkit.__all__},
            "ditkit": ditkit,
            "tiny_model_dir": tiny_model_dir,
            "tmp": tmp_path,
            "random_diff": random_diff,
            "tiny_overrides": tiny_overrides(tiny_model_dir),
        }
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        report: list[str] = []
        registered = list(registry._REGISTERED)  # register_format's example adds one
        try:
            result = runner.run(test, out=report.append)
        finally:
            registry._REGISTERED[:] = registered
        assert result.failed == 0, "".join(report)


def test_describe_a_checkpoint_needs_its_base(tiny_model_dir):
    from ditkit.errors import DitkitError

    with pytest.raises(DitkitError, match="is a full checkpoint: pass --base MODEL to subtract"):
        ditkit.describe(tiny_model_dir)  # the folder is a whole model, not a diff
    with pytest.raises(DitkitError, match="is a diff already, not a full checkpoint"):
        ditkit.describe(
            random_diff(ditkit.load_model(str(tiny_model_dir))[0], 1, 0), align_checkpoint=True
        )


def test_describe_reads_each_diff_times_scale(tiny_model_dir, tmp_path):
    from ditkit.diffs import save_peft
    from ditkit.errors import ConfigError

    model = ditkit.load_model(str(tiny_model_dir))
    save_peft(random_diff(model[0], 2, seed=0, scale=0.1), tmp_path / "r", str(tiny_model_dir))
    diffs = [random_diff(model[0], 1, seed=s) for s in range(1, 7)]
    read = lambda ds, **kw: ditkit.describe(  # noqa: E731
        ds, tmp_path / "r", model=model, max_new_tokens=6, **kw
    )
    amplified = read(diffs, scale=10.0)
    assert amplified == read([d.scaled(10.0) for d in diffs])
    assert amplified != read(diffs)  # the multiplier reaches the model
    with pytest.raises(ConfigError, match="multiplier > 0"):
        read(diffs, scale=0.0)
