"""Curation of a raw image pool into a balanced human-centric pretraining set (paper §3.1).

Stages: read and validate (:mod:`.validate`, :mod:`.sources`), person filter (:mod:`.person`),
quality filters (:mod:`.quality`), deduplication (:mod:`.phash`, :mod:`.dedup`, embeddings from
:mod:`.embed`), balancing (:mod:`.balance`), writing shards and the report (:mod:`.report`); run on
Ray Data by :mod:`.pipeline`. Ray and FAISS come with the ``curate`` extra and are imported lazily.
"""

from sapiens2.curate.config import (
    BalanceConfig,
    CurateConfig,
    DedupConfig,
    EmbedConfig,
    PersonConfig,
    QualityConfig,
    ReadConfig,
    WriteConfig,
    config_from_dict,
    load_config,
)

__all__ = [
    "BalanceConfig",
    "CurateConfig",
    "DedupConfig",
    "EmbedConfig",
    "PersonConfig",
    "QualityConfig",
    "ReadConfig",
    "WriteConfig",
    "config_from_dict",
    "load_config",
]
