"""Facts about a ``torch.save``d model file, read without running any code from it.

Usage::

    from harness.modelfile import ModelFileError, inspect
    facts = inspect(Path("run/model.pt"), source=Path("run/train.py"))  # ModelFacts(num_weights=..., ...)

Threat model: the file is written by an untrusted process (the agent's train.py), so its
pickle may name any class or function. This reader executes none of it: every global
resolves to an inert recording stub, except a small allow-list (``_pickle_module``) that maps
torch's tensor/parameter rebuild functions to local shims building shape descriptors; no
tensor bytes are read. Trusted: Python's zipfile and C unpickler, torch's zip reader
(``PyTorchFileReader`` via ``torch.serialization._load``), torch dtype objects. Each call
builds a fresh unpickler, stub class and shims, so one file cannot alter how the next is read.

Counting: tensors are deduplicated by (storage record, offset, shape, dtype), so tied weights
count once; parameters are the tensors pickled as ``nn.Parameter``, so a state_dict file has
num_params 0 and everything in num_float_elements. Each tensor must fit in its record's bytes
(self-overlapping, e.g. expand()ed, tensors are refused). The plain tensors a sparse or nested
tensor pickles as count as what they are; a quantized tensor (its storage, no plain tensor)
and a meta (shape-only) tensor are none. The legacy non-zip format is refused.

What the model hands over, whatever its form, is what the FLOP rule and num_params_M count
(num_weights): one weight per element of a floating-point tensor, and half a weight (what a
16-bit float packs) per every other byte of the file (integer, bool and other tensors, the
pickle with any bytes, str or numbers in it, zip headers, comments, padding) and of the
script the runners rebuild the model from (``source``). The whole file counts, not only
its records: the model's code in the runner may open the file and read any byte of it.
Weights bit-cast to int32 count twice their float32 count. The residue: a floating
tensor's bits read as narrower floats count at the element count (fp32 storage holding two
bf16 or four fp8 values: 2x or 4x under-counted; float64: 4x or 8x).
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import stat
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

MAX_RECORD_BYTES = 64 << 20  # data.pkl and the other small records (tensor data is never read)
_load = torch.serialization._load  # (zip_reader, map_location, pickle_module, **unpickler_kwargs)
_DTYPES = {n: v for n, v in vars(torch).items() if isinstance(v, torch.dtype)}
_UNTYPED = object()  # stands for torch.UntypedStorage in a persistent id (_rebuild_tensor_v3)


BYTES_PER_WEIGHT = 2  # outside a floating tensor, a weight is what a 16-bit float packs


@dataclass(frozen=True)
class ModelFacts:
    num_params: int  # elements of distinct nn.Parameters
    num_float_elements: int  # elements of distinct floating-point tensors (parameters and buffers)
    bytes: int  # file size
    dtypes: dict[str, int]  # dtype name ("float32", "bfloat16") -> elements, floating tensors
    other_bytes: int  # bytes of the file not taken by those floating tensors' elements
    source_bytes: int  # the script the runners rebuild the model from (0: none given)
    num_weights: int  # what the FLOP rule counts: floating elements + (other + source bytes) / 2


def byte_weights(nbytes: int) -> int:
    """Weights that `nbytes` outside a floating tensor count for (half a weight a byte, rounded up)."""
    return -(-nbytes // BYTES_PER_WEIGHT)


class ModelFileError(ValueError):
    """Unreadable, not a torch zip file, too big, malformed pickle, or no tensors."""


# What a persistent id resolves to (a checked size claim, no bytes) and what the rebuild
# shims return. Tuples with no __dict__ and no __setstate__: a BUILD opcode cannot alter them.
_Storage = NamedTuple("_Storage", [("key", str), ("dtype", torch.dtype), ("nbytes", int)])
_Tensor = NamedTuple("_Tensor", [("key", str), ("offset", int), ("shape", tuple),
                                 ("dtype", torch.dtype), ("param", bool)])


def _view(storage, offset, size, stride, dtype=None) -> _Tensor:
    if type(storage) is not _Storage:
        raise pickle.UnpicklingError("tensor without a storage record of this file")
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or type(size) is not tuple or type(stride) is not tuple:
        raise pickle.UnpicklingError("malformed tensor arguments")
    if len(size) != len(stride) or not all(type(i) is int and i >= 0 for i in (offset, *size, *stride)):
        raise pickle.UnpicklingError("malformed tensor shape")
    numel = math.prod(size)
    span = 1 + sum((n - 1) * s for n, s in zip(size, stride)) if numel else 0
    if (offset + span) * dtype.itemsize > storage.nbytes:
        raise pickle.UnpicklingError(f"tensor overruns its storage {storage.key!r}")
    if numel > span:  # e.g. expand()ed: elements not backed by bytes in the file
        raise pickle.UnpicklingError(f"self-overlapping tensor of shape {size} (stride {stride})")
    return _Tensor(storage.key, offset, size, dtype, False)


def _pickle_module(sizes: dict[str, int]):
    """A fresh pickle-module-like namespace for one file."""

    class Stub:
        """Any global not on the allow-list. REDUCE, NEWOBJ(_EX), calling an instance, BUILD,
        APPEND(S) and SETITEM(S) only record their data for the walk; nothing runs."""
        __slots__ = ("parts",)

        def __new__(cls, *args, **kwargs):
            self = object.__new__(cls)
            self.parts = [args, kwargs]
            return self

        def __call__(self, *args, **kwargs):
            return Stub(*args, **kwargs)

        def record(self, *items):
            self.parts.append(items)

        __setstate__ = append = extend = __setitem__ = record

    def tensor_v2(storage, offset, size, stride, *_):  # requires_grad, hooks, metadata: ignored
        return _view(storage, offset, size, stride)

    def tensor_v3(storage, offset, size, stride, _grad, _hooks, dtype, *_):
        return _view(storage, offset, size, stride, dtype)

    def parameter(data, *rest):  # requires_grad, hooks, state: never applied
        return data._replace(param=True) if type(data) is _Tensor else Stub(data, *rest)

    def from_type_v2(func, _new_type, args, state):  # func came from find_class: a shim or Stub
        ret = func(*args)
        return ret if type(ret) is _Tensor else Stub(ret, state)

    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): tensor_v3,
        ("torch._utils", "_rebuild_parameter"): parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): from_type_v2,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "UntypedStorage"): _UNTYPED,
        ("torch.storage", "UntypedStorage"): _UNTYPED,
    }

    def persistent_load(pid):
        if type(pid) is not tuple or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError("unsupported persistent id")
        _, kind, key, _location, numel = pid
        dtype = torch.uint8 if kind is _UNTYPED else getattr(kind, "dtype", None)
        if not isinstance(dtype, torch.dtype) or type(key) is not str or type(numel) is not int:
            raise pickle.UnpicklingError("malformed storage reference")
        nbytes, have = numel * dtype.itemsize, sizes.get(f"data/{key}")
        if have is None or not 0 <= nbytes <= have:
            raise pickle.UnpicklingError(f"storage {key!r} claims {nbytes} bytes, the file has {have}")
        return _Storage(key, dtype, nbytes)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            found = allowed.get((module, name))
            if found is None and module == "torch":
                found = _DTYPES.get(name)
            return Stub if found is None else found

        def load(self):
            # torch's _load set its own persistent_load (which reads storage bytes); replace it.
            self.persistent_load = persistent_load
            return super().load()

    return types.SimpleNamespace(Unpickler=Unpickler, UnpicklingError=pickle.UnpicklingError), Stub


def _records(f, path: Path) -> dict[str, int]:
    """Record name (archive prefix stripped) -> size, after checks torch's reader lacks."""
    head = f.read(1)
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except Exception as e:
        what = ("is a legacy (non-zip) torch.save file, which is not supported" if head == b"\x80"
                else "is not a zip file (truncated, or not written by torch.save)")
        raise ModelFileError(f"{path} {what}") from e
    names = [i.filename for i in infos]
    prefix = names[0].split("/")[0] + "/" if names and "/" in names[0] else ""
    if not prefix or not all(n.startswith(prefix) for n in names) \
            or len({n.lower() for n in names}) != len(names):
        raise ModelFileError(f"{path} is a zip file but not a torch.save archive")
    sizes = {}
    for i in infos:
        rel = i.filename[len(prefix):]
        if i.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(f"{path}: compressed record {rel!r} (torch.save never compresses)")
        if not rel.startswith("data/") and i.file_size > MAX_RECORD_BYTES:
            raise ModelFileError(f"{path}: record {rel!r} is {i.file_size} bytes, over {MAX_RECORD_BYTES}")
        sizes[rel] = i.file_size
    if "data.pkl" not in sizes:
        raise ModelFileError(f"{path} is a zip file without data.pkl: not a torch.save archive")
    return sizes


def _collect(root, stub_type) -> dict[tuple, bool]:
    """Distinct tensors reachable from root -> whether any occurrence is a Parameter."""
    found: dict[tuple, bool] = {}
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind is _Tensor:
            key = (obj.key, obj.offset, obj.shape, obj.dtype)
            found[key] = found.get(key, False) or obj.param
        elif kind in (list, tuple, set, frozenset):
            todo.extend(obj)
        elif kind in (dict, collections.OrderedDict):
            todo.extend(dict.keys(obj))
            todo.extend(dict.values(obj))
        elif kind is stub_type and type(obj.parts) is list:
            todo.extend(obj.parts)
    return found


def inspect(path: Path, max_bytes: int = 64 << 30, source: Path | None = None) -> ModelFacts:
    """Facts about the model file at path, and the bytes of `source` (the train.py the runners
    rebuild it from) in its num_weights; ModelFileError if either cannot be read."""
    path = Path(path)
    source_bytes = _source_size(Path(source)) if source is not None else 0
    try:  # O_NONBLOCK: a FIFO planted at path must not hang the harness
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ModelFileError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size == 0:
            raise ModelFileError(f"{path} is empty")
        if st.st_size > max_bytes:
            raise ModelFileError(f"{path} is {st.st_size} bytes, over the limit of {max_bytes}")
        sizes = _records(f, path)
        module, stub_type = _pickle_module(sizes)
        f.seek(0)
        try:  # _load, not torch.load: no TORCH_FORCE_* env overrides, no TorchScript dispatch
            root = _load(torch._C.PyTorchFileReader(f), "meta", module, encoding="utf-8")
            found = _collect(root, stub_type)
        except Exception as e:
            raise ModelFileError(f"{path}: malformed model file: {type(e).__name__}: {str(e)[:300]}") from e
    if not found:
        raise ModelFileError(f"{path}: no tensors with data in the file")
    dtypes: collections.Counter[str] = collections.Counter()
    taken: collections.Counter[str] = collections.Counter()  # record -> bytes of its floating elements
    num_params = 0
    for (key, _offset, shape, dtype), is_param in found.items():
        numel = math.prod(shape)
        num_params += numel if is_param else 0
        if dtype.is_floating_point:
            dtypes[str(dtype).removeprefix("torch.")] += numel
            taken[key] += numel * dtype.itemsize
    # Overlapping floating tensors pay for their bytes once per element each, so capping at the
    # record's size only keeps `other` from going negative; the gaps of a strided view stay other.
    other = st.st_size - sum(min(n, sizes[f"data/{key}"]) for key, n in taken.items())
    floats = sum(dtypes.values())
    return ModelFacts(num_params, floats, st.st_size, dict(dtypes), other, source_bytes,
                      floats + byte_weights(other + source_bytes))


def _source_size(source: Path) -> int:
    try:
        st = os.stat(source)
    except OSError as e:
        raise ModelFileError(f"{source}: cannot stat: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{source} is not a regular file")
    return st.st_size
