"""Model sources: where routing comes from (a run directory, a Hugging Face folder, a recorded routing dataset).

names = discover_sources(run, hf_folders, runs_dir)   # {display name: path}
source = open_source(names["default (shipped)"])
source.capabilities.history, source.steps(), source.record(docs, step)
"""

from analysis.sources.base import Capabilities, Capability, DocTuple, ModelCard, ModelSource
from analysis.sources.dataset_source import DatasetSource
from analysis.sources.discovery import discover_sources, open_source, study_runs
from analysis.sources.hf_source import HFSource
from analysis.sources.run_source import RunSource

__all__ = [
    "Capabilities",
    "Capability",
    "DatasetSource",
    "DocTuple",
    "HFSource",
    "ModelCard",
    "ModelSource",
    "RunSource",
    "discover_sources",
    "open_source",
    "study_runs",
]
