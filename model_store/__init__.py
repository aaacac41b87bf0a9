"""The versioned model store: named models, immutable versions, aliases, verified TorchScript and ONNX files."""

from model_store import onnx_runtime, pt2_export
from model_store.cpu import CpuBudget, cpu_budget, idle_cores, training_threads
from model_store.errors import (
    DamagedModelError,
    DamagedVersionError,
    IntegrityError,
    InvalidNameError,
    ModelNotFoundError,
    StorageError,
    StorageFullError,
    StoreError,
    VersionInUseError,
    VersionNotFoundError,
    storage_error,
)
from model_store.locations import Store, folder_of, is_s3, open_store
from model_store.manifest import (
    ExportedFiles,
    Manifest,
    OnnxExport,
    Pt2Export,
    SequenceSupport,
    TensorSpec,
    sequence_spec,
)
from model_store.names import MAX_VERSION, NAME_PATTERN, check_name, check_version, is_version_text
from model_store.store import PRODUCTION, LoadedModel, ModelReport, ModelStore, Scan, sha256_hex
from model_store.torchscript import ScriptModule, export_method, from_bytes, has_method, script, to_bytes

__all__ = [
    "MAX_VERSION",
    "NAME_PATTERN",
    "PRODUCTION",
    "CpuBudget",
    "DamagedModelError",
    "DamagedVersionError",
    "ExportedFiles",
    "IntegrityError",
    "InvalidNameError",
    "LoadedModel",
    "Manifest",
    "ModelNotFoundError",
    "ModelReport",
    "ModelStore",
    "OnnxExport",
    "Pt2Export",
    "Scan",
    "ScriptModule",
    "SequenceSupport",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoreError",
    "TensorSpec",
    "VersionInUseError",
    "VersionNotFoundError",
    "check_name",
    "check_version",
    "cpu_budget",
    "export_method",
    "folder_of",
    "idle_cores",
    "from_bytes",
    "has_method",
    "is_s3",
    "is_version_text",
    "onnx_runtime",
    "open_store",
    "pt2_export",
    "script",
    "sequence_spec",
    "sha256_hex",
    "storage_error",
    "to_bytes",
    "training_threads",
]
