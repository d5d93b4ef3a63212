"""The routing dataset: a directory of Parquet shards plus manifest.json, for corpora too large for one
in-memory `RoutingTrace` (layout in `analysis.dataset.layout` and docs/ARCHITECTURE.md).

- `layout`: paths, schemas, the manifest and its checks;
- `writer`: `DatasetWriter` (atomic shards, progress logs, manifest merge) and `ShardBuilder`;
- `reader`: `open_dataset`, `Dataset.verify/read/sample/to_trace`, `from_trace`;
- `inputs`: the recorder's input files, streamed;
- `record`: the streaming recorder (`RecordConfig`, `record_dataset`).
"""

from analysis.dataset.layout import FORMAT, DatasetError
from analysis.dataset.reader import Dataset, from_trace, open_dataset
from analysis.dataset.record import RecordConfig, record_dataset
from analysis.dataset.writer import DatasetWriter, ShardBuilder, ShardData

__all__ = [
    "FORMAT",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "ShardBuilder",
    "RecordConfig",
    "ShardData",
    "from_trace",
    "open_dataset",
    "record_dataset",
]
