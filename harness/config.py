"""Typed schema of the Hydra config (conf/): the set of keys and their types.

Registered in Hydra's ConfigStore as `schema`, first in every verb's defaults list, so
an unknown key or a wrong type stops at composition with Hydra's own message. The `agent`
node is typed by the chosen agent's own schema (harness/agent_config.py), which its
conf/agent/<name>.yaml brings in: each agent accepts only its own keys.
"""
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from harness import agent_config
from harness.agent_config import AgentConf


class BudgetMode(str, Enum):
    wall = "wall"  # plain wall-clock seconds of training (the upstream behaviour)
    normalized = "normalized"  # reference-device seconds, converted by calibrated throughput
    tokens = "tokens"  # a fixed number of training tokens: identical step counts everywhere
    flops = "flops"  # a fixed number of training FLOPs (the baseline's tokens x its FLOPs/token)


@dataclass
class BackendConf:
    name: str = "auto"  # cuda | rocm | mps | cpu | auto (first available)
    threads: Optional[int] = None  # CPU intra-op threads; None = all cores
    # cuda/rocm: pin the campaign (or experiment) and its children to this GPU, an index
    # among the GPUs the process sees (CUDA_/HIP_VISIBLE_DEVICES); None = the first, unpinned
    device: Optional[int] = None


@dataclass
class DataConf:
    name: str = "builtin"
    vocab_size: int = 4096  # BPE vocabulary, special tokens included
    max_seq_len: int = 512  # tokens per row (MAX_SEQ_LEN)
    eval_tokens: int = 65536  # validation tokens scored by evaluate_bpb (upper bound)
    # data, shards and tokenizers live here ($AUTORESEARCH_CACHE overrides the default)
    cache_dir: str = "${oc.env:AUTORESEARCH_CACHE,'~/.cache/autoresearch'}"
    path: Optional[str] = None  # data=local: directory of .txt/.jsonl/.parquet
    val_fraction: float = 0.02  # data=local: share of documents held out (stable hash)
    base_url: Optional[str] = None  # data=climbmix: where shard_XXXXX.parquet files live
    num_shards: int = 10  # data=climbmix: training shards to download
    workers: int = 8  # data=climbmix: parallel downloads
    tokenizer_chars: int = 200_000_000  # characters of training text the BPE sees (cap)


@dataclass
class ModelConf:
    name: str = "tiny"
    depth: int = 4  # transformer blocks
    width: int = 256  # model dimension
    head_dim: int = 64  # dimension per attention head
    device_batch_size: int = 8  # rows per forward pass
    total_batch_size: int = 2048  # tokens per optimizer step (grad accumulation fills it)
    window_pattern: str = "L"  # per-layer attention: S = sliding window, L = full causal


@dataclass
class BudgetConf:
    mode: BudgetMode = BudgetMode.normalized
    seconds: float = 300.0  # training seconds (wall mode)
    reference_seconds: float = 300.0  # normalized/tokens/flops: seconds of the reference device
    # default (the preset's row of conf/reference_devices.yaml) | a row name | self |
    # a calibration's id (fingerprint hash) | the path of a calibration JSON
    reference: str = "default"
    min_seconds: float = 10.0  # sane bounds on the resulting wall budget ...
    max_seconds: float = 7200.0
    force: bool = False  # ... unless forced
    # most seconds from the start of train.py to the start of the training clock;
    # None = measured on the frozen baseline by calibration (1.5 x its start-up + 1 s)
    allowance_seconds: Optional[float] = None
    warmup_tokens: Optional[int] = None  # most tokens served (random rows) before the clock; None = 2 x model.total_batch_size
    grace_seconds: Optional[float] = None  # past the budget before a run is cut off; None = max(1, 2% of the budget)


@dataclass
class CalibrateConf:
    out: Optional[str] = None  # where to save the calibration JSON; None = the cache
    max_age_hours: float = 168.0  # an older calibration is redone
    # the quality bar: throughput spread (CV) at most this, and no foreign load detected
    # (shared VMs vary ~5%); a measurement that fails it is redone, at most `attempts` times
    max_cv: float = 0.1
    attempts: int = 3
    repeats: int = 5  # throughput windows (CV over these); the baseline trains repeats x window_seconds
    # length of one window; None = budget.reference_seconds (at most 120) / repeats, >= 2 s
    window_seconds: Optional[float] = None
    warmup_steps: int = 3  # steps before the workload's matmul-independent figures (probe noise)
    noise_runs: int = 0  # baseline experiments for the val_bpb noise floor (0 = skip)
    max_step_seconds: float = 60.0  # stop early when one step would take longer (preset too big)
    timeout_seconds: float = 900.0  # hard limit on the measuring process
    force: bool = False  # measure even when a valid cached calibration exists, and use it even if it fails the bar


@dataclass
class EvalConf:
    timeout_seconds: float = 900.0  # hard limit on the whole evaluation (both model runners)
    causality_check: bool = True  # run the probe: refuse models that read future tokens or other rows
    probe_batches: int = 8  # batches of scored rows, suffixes replaced, a fresh runner must agree on
    probe_tolerance: Optional[float] = None  # nats; None = from calibration (10 x the baseline's noise, >= a dtype floor)
    # each runner's bound: bound_factor x the frozen baseline's runner on this device (its
    # forwards scaled by model size) + bound_slack_seconds; runner_seconds: a flat bound instead
    bound_factor: float = 2.0
    bound_slack_seconds: float = 3.0
    runner_seconds: Optional[float] = None


class Isolation(str, Enum):
    auto = "auto"  # sandbox where the OS can, else run unprotected with a loud warning
    on = "on"  # refuse to run without a sandbox
    off = "off"  # no sandbox: results are not tamper-proof


class KernelMode(str, Enum):
    auto = "auto"  # Triton on CUDA/ROCm, the reference elsewhere or when Triton fails (one warning)
    reference = "reference"  # the pure-torch references everywhere
    triton = "triton"  # Triton or a loud error (on CPU only under TRITON_INTERPRET=1)


@dataclass
class KernelsConf:
    mode: KernelMode = KernelMode.auto  # the training child's AUTORESEARCH_KERNELS; evaluation always uses the references
    seed: int = 0  # kernels check: the inputs are drawn from this seed (and the next ones)
    only: Optional[List[str]] = None  # kernels check/bench: these kernels only (rms_norm, apply_rotary, linear_cross_entropy)
    csv: str = "kernel_bench.csv"  # kernels bench: rows are appended here (relative: to the working directory)
    repeats: int = 10  # kernels bench: timed repetitions per measurement (the median is kept)


class Scope(str, Enum):
    train = "train"  # trainer/train.py
    kernels = "kernels"  # kernels/*.py (Triton kernels; the references stay immutable)
    all = "all"  # both


@dataclass
class CampaignConf:
    tag: str = "${now:%Y%m%d}"  # the same tag resumes the campaign
    root: str = "${oc.env:AUTORESEARCH_CAMPAIGNS,campaigns}"  # work trees + ledgers (relative: to the project)
    max_experiments: int = 10  # experiments after the baseline
    max_hours: Optional[float] = None  # wall-clock cap of this invocation


@dataclass
class KeepConf:
    # a candidate is kept when its mean beats the head's by more than noise_sigmas standard
    # errors of the difference (harness/keep.py); a smaller gain is re-run confirm_runs times
    baseline_runs: int = 3  # the baseline's runs: the campaign's first noise measurement (1 = none)
    confirm_runs: int = 2  # more runs of a candidate whose gain is within the margin (each adds noise dof)
    threshold: Optional[float] = None  # a fixed val_bpb margin instead of the noise rule
    noise_sigmas: float = 2.0


@dataclass
class ReplayConf:
    source: Optional[str] = None  # autoresearch replay: the campaign whose discoveries to replay, "<tag>/<slot>"
    repeats: int = 2  # runs of each discovery (each mode) on the target; the baseline runs keep.baseline_runs times


@dataclass
class ReportConf:
    tags: Optional[List[str]] = None  # autoresearch report: only these campaign tags (every slot); None = all
    out: Optional[str] = None  # where the report goes (relative: to the working directory); None = <campaign.root>/report


@dataclass
class Config:
    backend: BackendConf = field(default_factory=BackendConf)
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    budget: BudgetConf = field(default_factory=BudgetConf)
    eval: EvalConf = field(default_factory=EvalConf)
    calibrate: CalibrateConf = field(default_factory=CalibrateConf)
    # the common keys here; conf/agent/<name>.yaml narrows the node to that agent's schema
    # (a subclass of AgentConf, harness/agent_config.py), whose keys alone it then accepts
    agent: AgentConf = field(default_factory=AgentConf)
    campaign: CampaignConf = field(default_factory=CampaignConf)
    keep: KeepConf = field(default_factory=KeepConf)
    scope: Scope = Scope.train
    kernels: KernelsConf = field(default_factory=KernelsConf)
    replay: ReplayConf = field(default_factory=ReplayConf)
    report: ReportConf = field(default_factory=ReportConf)
    isolation: Isolation = Isolation.auto  # the sandbox for everything the agent wrote
    description: str = ""  # autoresearch record: what the external agent changed
    train_file: Optional[str] = None  # train.py to run; None = the project's trainer/train.py
    quiet: bool = False  # do not stream train.py's output


def register() -> None:
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    agent_config.register(store)


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def project_path(path: str) -> str:
    """`${project_path:...}` in conf/: a path relative to the project made absolute, as
    campaign.root is read (a multirun's sweep directory lands beside the campaigns
    wherever the command was started)."""
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else CONF_DIR.parent / p)


# registered on import: a launcher's worker process resolves the sweep directory too
OmegaConf.register_new_resolver("project_path", project_path, replace=True)


def to_dict(cfg) -> dict:
    """A plain, JSON-ready dict of a composed config (enums as their values)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def compose(verb: str, overrides: list[str]):
    """Compose a verb's config with Hydra's compose API (tests, and prepare by hand)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=verb, overrides=list(overrides))


def compose_dict(verb: str, overrides: list[str]) -> dict:
    return to_dict(compose(verb, overrides))
