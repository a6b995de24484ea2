"""Workspace: agents read and edit only inside their scope; every refusal is recorded."""
import os

import pytest

from harness.workspace import EditError, ScopeError, Workspace, matches


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "train.py").write_text("LR = 0.1  # why\nDEPTH = 4\n")
    (tmp_path / "prepare.py").write_text("MAX_SEQ_LEN = 2048\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "norm.py").write_text("def norm(x):\n    return x\n")
    (tmp_path / "kernels" / "sub").mkdir()
    (tmp_path / "kernels" / "sub" / "deep.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("private\n")
    return tmp_path


def train_ws(root):
    return Workspace(root, editable=["train.py"], immutable=["prepare.py"])


def test_list_read_write_replace(tree):
    ws = train_ws(tree)
    assert ws.list_files() == ["train.py"]
    assert ws.read("train.py").startswith("LR = 0.1")
    assert ws.read("./prepare.py") == "MAX_SEQ_LEN = 2048\n"  # immutable: readable
    ws.replace("train.py", "LR = 0.1", "LR = 0.2")
    assert (tree / "train.py").read_text() == "LR = 0.2  # why\nDEPTH = 4\n"
    ws.write("train.py", "DEPTH = 8\n")
    assert (tree / "train.py").read_text() == "DEPTH = 8\n"
    assert ws.refusals == []


def test_replace_errors_are_helpful(tree):
    ws = train_ws(tree)
    with pytest.raises(EditError, match="old text not found"):
        ws.replace("train.py", "LR = 0.3", "LR = 0.2")
    (tree / "train.py").write_text("A = 1\nA = 1\n")
    with pytest.raises(EditError, match="occurs 2 times"):
        ws.replace("train.py", "A = 1", "A = 2")
    with pytest.raises(EditError, match="empty"):
        ws.replace("train.py", "", "x")
    assert not isinstance(EditError("x"), ScopeError)
    assert ws.refusals == []  # an edit error is not a scope refusal


def test_crlf_preserved(tree):
    ws = train_ws(tree)
    (tree / "train.py").write_bytes(b"LR = 0.1\r\nDEPTH = 4\r\n")
    ws.replace("train.py", "LR = 0.1", "LR = 0.5")
    assert (tree / "train.py").read_bytes() == b"LR = 0.5\r\nDEPTH = 4\r\n"


@pytest.mark.parametrize("path, why", [
    ("/etc/passwd", "absolute"),
    ("../outside.py", "traversal"),
    ("kernels/../train.py/../../x", "traversal"),
    ("notes.txt", "outside the scope"),
    ("prepare.py", "immutable"),
    ("", "empty"),
])
def test_write_refusals(tree, path, why):
    ws = train_ws(tree)
    with pytest.raises(ScopeError, match=why):
        ws.write(path, "x = 1\n")
    with pytest.raises(ScopeError, match=why):
        ws.replace(path, "a", "b")
    assert len(ws.refusals) == 2 and why in ws.refusals[0]
    assert (tree / "prepare.py").read_text() == "MAX_SEQ_LEN = 2048\n"


def test_refusal_names_the_allowed_set(tree):
    ws = Workspace(tree, editable=["train.py", "kernels/*.py"])
    with pytest.raises(ScopeError) as e:
        ws.write("setup.py", "")
    assert "train.py" in str(e.value) and "kernels/*.py" in str(e.value)


def test_read_refusals(tree):
    ws = train_ws(tree)
    for path in ("notes.txt", "/etc/passwd", "../x"):
        with pytest.raises(ScopeError):
            ws.read(path)
    assert len(ws.refusals) == 3
    with pytest.raises(EditError, match="no such file"):
        Workspace(tree, editable=["missing.py"]).read("missing.py")


def test_symlink_outside_root_refused(tree, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.py"
    outside.write_text("SECRET = 1\n")
    os.symlink(outside, tree / "train.py.link")
    os.symlink(outside.parent, tree / "kernels" / "linkdir")
    ws = Workspace(tree, editable=["train.py*", "kernels/**"])
    with pytest.raises(ScopeError, match="outside the work tree"):
        ws.read("train.py.link")
    with pytest.raises(ScopeError, match="outside the work tree"):
        ws.write("kernels/linkdir/secret.py", "SECRET = 2\n")
    assert outside.read_text() == "SECRET = 1\n"
    assert "train.py.link" not in ws.list_files()


def test_symlink_inside_root_to_immutable_refused(tree):
    os.symlink(tree / "prepare.py", tree / "kernels" / "evil.py")
    ws = Workspace(tree, editable=["kernels/*.py"], immutable=["prepare.py"])
    with pytest.raises(ScopeError, match="immutable"):
        ws.write("kernels/evil.py", "MAX_SEQ_LEN = 1\n")
    assert (tree / "prepare.py").read_text() == "MAX_SEQ_LEN = 2048\n"
    assert ws.list_files() == ["kernels/norm.py"]


def test_kernel_scope_globs(tree):
    ws = Workspace(tree, editable=["kernels/*.py"], immutable=["prepare.py", "train.py"])
    assert ws.list_files() == ["kernels/norm.py"]  # "*" does not cross "/"
    ws.write("kernels/rotary.py", "def rot(x):\n    return x\n")  # new file in scope
    assert ws.list_files() == ["kernels/norm.py", "kernels/rotary.py"]
    with pytest.raises(ScopeError, match="outside the scope"):
        ws.write("kernels/sub/deep.py", "x = 2\n")
    with pytest.raises(ScopeError, match="immutable"):
        ws.write("train.py", "")
    assert ws.read("train.py").startswith("LR")


def test_matches():
    assert matches("kernels/a.py", ["kernels/*.py"])
    assert not matches("kernels/x/a.py", ["kernels/*.py"])
    assert matches("kernels/x/a.py", ["kernels/**/*.py"]) and matches("kernels/a.py",
                                                                      ["kernels/**/*.py"])
    assert matches("train.py", ["train.py"]) and not matches("a/train.py", ["train.py"])


def test_allowed_does_not_record(tree):
    ws = train_ws(tree)
    assert ws.allowed("train.py") and not ws.allowed("prepare.py")
    assert ws.allowed("prepare.py", write=False)
    assert ws.refusals == []
