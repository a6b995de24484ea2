"""No import cycles in harness/, backends/, trainer/ and kernels/, counting imports inside
functions: a cycle hidden in a function is still two modules that cannot be understood,
tested or moved one without the other."""
from import_graph import cycles, graph


def test_the_import_graph_has_no_cycles():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_a_cycle_through_a_function_level_import(tmp_path):
    """The checker itself: two modules, one importing the other at the top and the other
    importing back inside a function, form a cycle; a package importing its own
    submodule does not."""
    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from harness import a\n")
    (pkg / "a.py").write_text("from harness.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from harness import a\n    return a\n")
    for name in ("backends", "trainer", "kernels"):
        (tmp_path / name).mkdir()
    assert cycles(graph(tmp_path)) == [["harness.a", "harness.b"]]
    (pkg / "b.py").write_text("def thing():\n    return 1\n")
    assert cycles(graph(tmp_path)) == []
