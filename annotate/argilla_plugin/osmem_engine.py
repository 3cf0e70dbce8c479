"""An argilla-server 2.8 search engine for osmem (the in-memory OpenSearch-compatible server).

This file is NOT part of the quantmedic package: it imports ``argilla_server`` and only runs inside
the Argilla server's own virtual environment. ``quantmedic.annotate.server`` puts this folder on
the server's PYTHONPATH and starts every ``argilla_server`` command through a launcher that
imports this module first, so the engine is registered before the server resolves
``ARGILLA_SEARCH_ENGINE=osmem``.

osmem speaks the OpenSearch REST API but runs no scripts and no ``knn`` queries. The stock
``opensearch`` engine uses a Painless script for three writes (response upsert, response delete,
suggestion delete) and a ``knn`` query for similarity search; everything else works unchanged.
This subclass overrides exactly those four methods:

* the writes become read-modify-write: GET the document, change ``_source`` in Python, and
  re-index it with ``if_seq_no``/``if_primary_term`` (osmem honours them), retrying on a version
  conflict, so concurrent annotators (or the rq worker) cannot overwrite each other;
* similarity search fetches the vectors of the matching documents and ranks them by cosine
  similarity in Python (brute force: fine for annotation-sized datasets).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional
from uuid import UUID

from opensearchpy.exceptions import ConflictError

from argilla_server.models import Response, Suggestion, VectorSettings
from argilla_server.search_engine.base import SearchEngine
from argilla_server.search_engine.commons import es_field_for_vector_settings, es_index_name_for_dataset
from argilla_server.search_engine.opensearch import OpenSearchEngine

ENGINE_NAME = "osmem"
WRITE_RETRIES = 20
PAGE_SIZE = 1000

# The stock engine quiets these only when ARGILLA_SEARCH_ENGINE is "opensearch".
logging.getLogger("opensearch").setLevel(logging.ERROR)
logging.getLogger("opensearch_transport").setLevel(logging.ERROR)


@SearchEngine.register(engine_name=ENGINE_NAME)
@dataclasses.dataclass
class OsmemSearchEngine(OpenSearchEngine):
    async def _modify_source(self, index: str, id: str, change: Callable[[Dict[str, Any]], None]) -> None:
        """Apply ``change`` to the stored document, optimistic-concurrency style."""
        for attempt in range(WRITE_RETRIES):
            doc = await self.client.get(index=index, id=id)
            source = doc["_source"]
            change(source)
            try:
                await self.client.index(
                    index=index, id=id, body=source, refresh=True,
                    if_seq_no=doc["_seq_no"], if_primary_term=doc["_primary_term"],
                )
                return
            except ConflictError:  # someone wrote in between: read again
                if attempt == WRITE_RETRIES - 1:
                    raise

    async def update_record_response(self, response: Response) -> None:
        record = response.record
        es_response = self._map_record_response_to_es(response)

        def change(source: Dict[str, Any]) -> None:
            kept = [r for r in source.get("responses") or [] if str(r.get("id")) != str(response.id)]
            source["responses"] = [*kept, es_response]

        await self._modify_source(es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_response(self, response: Response) -> None:
        record = response.record

        def change(source: Dict[str, Any]) -> None:
            if source.get("responses") is not None:
                source["responses"] = [r for r in source["responses"] if str(r.get("id")) != str(response.id)]

        await self._modify_source(es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        name = suggestion.question.name

        def change(source: Dict[str, Any]) -> None:
            (source.get("suggestions") or {}).pop(name, None)

        await self._modify_source(
            es_index_name_for_dataset(suggestion.record.dataset), str(suggestion.record_id), change
        )

    async def _request_similarity_search(
        self,
        index: str,
        vector_settings: VectorSettings,
        value: List[float],
        k: int,
        excluded_id: Optional[UUID] = None,
        query_filters: Optional[List[dict]] = None,
    ) -> dict:
        """Brute-force cosine ranking, shaped like an OpenSearch lucene ``cosinesimil`` answer
        (score = (1 + cos) / 2), which is what ``_process_search_response`` reads."""
        field = es_field_for_vector_settings(vector_settings)
        query: Dict[str, Any] = {"bool": {"filter": [{"exists": {"field": field}}, *(query_filters or [])]}}
        if excluded_id:
            query["bool"]["must_not"] = [{"ids": {"values": [str(excluded_id)]}}]

        norm = math.sqrt(sum(x * x for x in value)) or 1.0
        hits, offset = [], 0
        while True:
            page = await self.client.search(
                index=index, body={"query": query, "sort": [{"_doc": "asc"}]},
                _source_includes=[field], from_=offset, size=PAGE_SIZE,
            )
            for hit in page["hits"]["hits"]:
                vector = hit["_source"]
                for part in field.split("."):
                    vector = (vector or {}).get(part)
                if not vector:
                    continue
                dot = sum(a * b for a, b in zip(value, vector))
                cos = dot / (norm * (math.sqrt(sum(x * x for x in vector)) or 1.0))
                hits.append({"_id": hit["_id"], "_score": (1.0 + cos) / 2.0})
            offset += PAGE_SIZE
            if len(page["hits"]["hits"]) < PAGE_SIZE:
                break

        hits.sort(key=lambda hit: hit["_score"], reverse=True)
        hits = hits[:k]
        return {"hits": {"hits": hits, "total": {"value": len(hits), "relation": "eq"}}}
