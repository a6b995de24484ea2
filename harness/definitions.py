"""Import a training script's definitions without running its training.

    module = load_definitions(Path("train.py"))      # its classes, functions and the globals they use

The model runners rebuild the handed-over model from the classes of the train.py that
trained it, and calibration reads the frozen baseline's model and optimizer. A script may
be shaped like ours (`main()` behind `if __name__ == "__main__":`) or like upstream's: a
top-level script that builds its model under `with torch.device("meta"):`, then runs lines
such as `param_counts = model.num_scaling_params()`, wraps it with `torch.compile` and
trains in a top-level loop. Running such a file, or only its simple assignments, either
trains or fails on names that only the dropped code defines.

So the loader keeps what the definitions need and nothing else:
- every import, function and class definition (their decorators, bases and defaults too);
- top-level assignments, in file order, only when they define a name that a kept
  definition reads as a global (found with `symtable`, so a local or a parameter of the
  same name does not count), or an UPPER_CASE constant (the knobs), and then, recursively,
  the assignments those need;
- `if`/`try`/`with` blocks only for the statements in them that the rule above keeps;
- never a loop, a bare call or an `if __name__ == "__main__":` block.
A kept assignment that raises (a device query on a machine without that device, say) is
reported on stderr and skipped: the name stays undefined, and a model that really needs it
fails where it uses it, with that name in the error.
"""
from __future__ import annotations

import ast
import builtins
import symtable
import sys
import traceback
import types
from pathlib import Path

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_IMPORTS = (ast.Import, ast.ImportFrom)
_ASSIGNS = (ast.Assign, ast.AnnAssign, ast.AugAssign)
_BLOCKS = (ast.If, ast.Try, ast.With)


def load_definitions(path: Path, name: str = "train") -> types.ModuleType:
    """Execute the needed part of the script at `path` as module `name` (registered in
    sys.modules, so pickles of its classes resolve); return the module."""
    source = Path(path).read_text()
    tree = ast.parse(source, filename=str(path))
    needed = _needed_names(tree, source, str(path))
    body = _select(tree.body, needed)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    for node in body:
        code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec")
        if isinstance(node, _DEFS + _IMPORTS):
            exec(code, module.__dict__)  # a definition or import that fails would fail training too
            continue
        try:
            exec(code, module.__dict__)
        except Exception:  # noqa: BLE001 - reported; the name stays undefined
            print(f"definitions: line {node.lineno} of {Path(path).name} raised and was skipped:\n"
                  + traceback.format_exc(limit=1), file=sys.stderr, flush=True)
    return module


# --------------------------------------------------------------------------- analysis

def _assigned(node: ast.AST) -> set[str]:
    """Names a top-level statement binds in the module (recursing into blocks)."""
    out = set()
    if isinstance(node, ast.Assign):
        for t in node.targets:
            out |= _target_names(t)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        out |= _target_names(node.target)
    elif isinstance(node, _BLOCKS):
        for child in _block_bodies(node):
            for stmt in child:
                out |= _assigned(stmt)
        if isinstance(node, ast.With):
            for item in node.items:
                if item.optional_vars is not None:
                    out |= _target_names(item.optional_vars)
    return out


def _target_names(t: ast.AST) -> set[str]:
    if isinstance(t, ast.Name):
        return {t.id}
    if isinstance(t, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(e) for e in t.elts)) if t.elts else set()
    if isinstance(t, ast.Starred):
        return _target_names(t.value)
    return set()  # attribute or subscript targets bind no module name


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _block_bodies(node: ast.AST) -> list[list[ast.stmt]]:
    if isinstance(node, ast.If):
        return [node.body, node.orelse]
    if isinstance(node, ast.Try):
        return [node.body, *[h.body for h in node.handlers], node.orelse, node.finalbody]
    return [node.body]  # With


def _globals_of_definitions(source: str, filename: str) -> set[str]:
    """Every global name read inside a function or class body anywhere in the file."""
    out: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for child in table.get_children():
            for sym in child.get_symbols():
                if (sym.is_global() or (child.get_type() == "class" and sym.is_referenced()
                                        and not sym.is_assigned() and not sym.is_imported())):
                    out.add(sym.get_name())
            walk(child)

    walk(symtable.symtable(source, filename, "exec"))
    return out


def _needed_names(tree: ast.Module, source: str, filename: str) -> set[str]:
    """Names the kept definitions need, closed over the assignments that define them."""
    needed = _globals_of_definitions(source, filename)
    for node in tree.body:
        if isinstance(node, _DEFS):  # decorators, bases, defaults: evaluated at module level
            for part in (*node.decorator_list, *getattr(node, "bases", []), *getattr(node, "keywords", [])):
                needed |= _reads(part)
            if not isinstance(node, ast.ClassDef):
                needed |= set().union(*(_reads(d) for d in (*node.args.defaults, *node.args.kw_defaults) if d))
    assigns = [n for n in _flat(tree.body) if isinstance(n, _ASSIGNS)]
    needed |= {name for n in assigns for name in _assigned(n) if name.isupper()}
    while True:  # close over what the needed assignments read
        more = set()
        for n in assigns:
            if _assigned(n) & needed:
                more |= _reads(n) - needed
        more -= set(dir(builtins))
        if not more:
            return needed
        needed |= more


def _flat(body: list[ast.stmt]) -> list[ast.stmt]:
    out = []
    for node in body:
        if isinstance(node, _BLOCKS) and not _is_main_guard(node):
            for child in _block_bodies(node):
                out += _flat(child)
        else:
            out.append(node)
    return out


def _is_main_guard(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "__name__" in _reads(node.test)


def _select(body: list[ast.stmt], needed: set[str]) -> list[ast.stmt]:
    """The statements of `body` to run, in order (blocks filtered recursively)."""
    out = []
    for node in body:
        if isinstance(node, _DEFS + _IMPORTS):
            out.append(node)
        elif isinstance(node, _ASSIGNS):
            if _assigned(node) & needed:
                out.append(node)
        elif isinstance(node, _BLOCKS) and not _is_main_guard(node):
            kept = _filtered_block(node, needed)
            if kept is not None:
                out.append(kept)
    return out


def _filtered_block(node: ast.AST, needed: set[str]) -> ast.AST | None:
    if isinstance(node, ast.With) and any(_is_device_context(i) for i in node.items):
        return None  # a model built on the meta device is the training's model, never a definition
    parts = [_select(b, needed) for b in _block_bodies(node)]
    if not any(parts):
        return None
    fill = lambda stmts: stmts or [ast.Pass()]  # noqa: E731
    if isinstance(node, ast.If):
        new = ast.If(test=node.test, body=fill(parts[0]), orelse=parts[1])
    elif isinstance(node, ast.Try):
        handlers = [ast.ExceptHandler(type=h.type, name=h.name, body=fill(p))
                    for h, p in zip(node.handlers, parts[1:-2])]
        new = ast.Try(body=fill(parts[0]), handlers=handlers, orelse=parts[-2], finalbody=parts[-1])
        if not handlers and not new.finalbody:
            new.finalbody = [ast.Pass()]
    else:
        new = ast.With(items=node.items, body=fill(parts[0]))
    return ast.fix_missing_locations(ast.copy_location(new, node))


def _is_device_context(item: ast.withitem) -> bool:
    """`with torch.device(...)` (or `device(...)`): it only places what the block builds."""
    f = item.context_expr.func if isinstance(item.context_expr, ast.Call) else None
    return (isinstance(f, ast.Attribute) and f.attr == "device") or (isinstance(f, ast.Name) and f.id == "device")
