"""Run inside a sandbox (tests/test_data_out_of_reach.py): walk every root given, read every
file this process can open, and report each that holds a shingle of the data set.

    python shingle_scan.py SHINGLES_FILE ROOT...    -> one JSON line {files, bytes, hits}

SHINGLES_FILE: one shingle per line (48 bytes from a long line of a document). Every
readable text file is searched for every shingle as a plain substring (GNU grep -F, whose
multi-pattern search keeps this to seconds), so a copy in any line wrapping or escaping
is found; gzip, bz2, xz and zip files (wheels, eggs) are opened and their members searched
too. ELF binaries and other files with a NUL byte at their start (bytecode, libraries,
images) are skipped, and /proc and /sys are the kernel's: no copy of a text lies there.
"""
import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import zipfile

MAX_BYTES = 256 << 20  # one file (or archive member), after decompression
COMPRESSED = {b"\x1f\x8b\x08": gzip.decompress, b"BZh": bz2.decompress, b"\xfd7z": lzma.decompress}


def members(data: bytes):
    """An archive's members' bytes (nothing for a file that is not one)."""
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                yield from (z.read(i) for i in z.infolist() if i.file_size <= MAX_BYTES)
        elif data[:3] in COMPRESSED:
            yield COMPRESSED[data[:3]](data)[:MAX_BYTES]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, lzma.LZMAError, NotImplementedError):
        return


def walk(roots: list[str]):
    """(text files to search, archives) among the readable regular files beneath roots."""
    texts, archives, seen = [], [], set()
    for root in roots:
        for top, dirs, names in os.walk(root):
            if top in ("/proc", "/sys") or top.startswith(("/proc/", "/sys/")):
                dirs[:] = []
                continue
            for name in names:
                path = os.path.join(top, name)
                try:
                    st = os.stat(path, follow_symlinks=False)
                    if not (st.st_mode & 0o170000 == 0o100000) or (st.st_dev, st.st_ino) in seen \
                            or st.st_size > MAX_BYTES:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    with open(path, "rb") as f:
                        head = f.read(8192)
                except OSError:
                    continue  # not readable in the sandbox: out of reach, as it should be
                if head[:4] == b"PK\x03\x04" or head[:3] in COMPRESSED:
                    archives.append(path)
                elif b"\0" not in head:
                    texts.append((path, st.st_size))
    return texts, archives


def _grep(shingle_file: str, args: list[str], data: bytes | None = None) -> list[str]:
    r = subprocess.run(["grep", "-lF", "--binary-files=text", "--no-messages", "-f", shingle_file, *args],
                       input=data, capture_output=True)
    if r.returncode > 1:
        raise SystemExit(f"grep failed: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode(errors="replace").splitlines()


def _batches(paths: list[str], max_chars: int = 100_000):
    """Runs of paths short enough for one command line."""
    batch, size = [], 0
    for p in paths:
        if batch and size + len(p) > max_chars:
            yield batch
            batch, size = [], 0
        batch.append(p)
        size += len(p) + 1
    if batch:
        yield batch


def main(shingle_file: str, roots: list[str]) -> None:
    texts, archives = walk(roots)
    hits = []
    for batch in _batches([p for p, _ in texts]):  # grep -l: the files holding any shingle
        hits += _grep(shingle_file, ["--", *batch])
    # archives: their members unpacked into the scratch directory, a batch at a time, so
    # that grep runs once a batch rather than once a member
    unpacked = os.path.join(os.environ.get("TMPDIR", "."), "shingle-scan")
    for i in range(0, len(archives), 1000):
        owner = {}
        os.makedirs(unpacked, exist_ok=True)
        for path in archives[i:i + 1000]:
            with open(path, "rb") as f:
                data = f.read()
            for m in members(data):
                name = os.path.join(unpacked, str(len(owner)))
                with open(name, "wb") as out:
                    out.write(m)
                owner[name] = path
        for batch in _batches(list(owner)):
            hits += sorted({owner[h] for h in _grep(shingle_file, ["--", *batch])})
        shutil.rmtree(unpacked)
    print(json.dumps({"files": len(texts) + len(archives), "bytes": sum(n for _, n in texts),
                      "archives": len(archives), "hits": hits}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
