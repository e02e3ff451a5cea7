"""moto_server, with two changes for the local cloud: a DynamoDB Query on a
table's own keys reads the queried partition instead of the whole table, and
a stream's shard iterator is forgotten once GetRecords has used it.

moto 5.2.5 (pinned in moto.txt) answers every Query by sorting every item
of the table and then keeping those with the asked-for partition key:
O(n log n) in the table per query. Prism's single table holds the jobs,
their event logs and the WebSocket subscriptions, and the progress function
queries it for every event, so under the 500-job priority benchmark moto
spent most of a core sorting and the functions timed out waiting on it.
DynamoDB itself reads one partition. Here `Table.all_items` is narrowed to
the queried partition for the duration of that one query (per thread: moto
serves requests on threads); the filtering, ordering, paging and limits are
moto's own code. Queries on an index and scans are untouched.

moto keeps every shard iterator it ever issued, and each GetRecords issues a
new one (~650 bytes). The local cloud reads the table's stream ten times a
second per shard, as Lambda's event source reads it, and never reuses an
iterator, so without this moto would grow by megabytes an hour while idle.

Started by `prism` as `python moto_server.py -H HOST -p PORT`.
"""

import threading

from moto.dynamodb.models.table import Table
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.server import main

_narrowed = threading.local()
_all_items = Table.all_items
_query = Table.query


def _partition_items(self):
    narrowed = getattr(_narrowed, "table_items", None)
    if narrowed is not None and narrowed[0] is self:
        return list(narrowed[1])
    return _all_items(self)


def _partition_query(self, hash_key, *args, **kwargs):
    # moto's backend passes index_name as the eighth positional argument.
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    narrow = index_name is None and hash_key is not None and self.range_key_attr is not None
    if narrow:
        # `items` maps partition key -> {sort key -> item}; .get creates nothing.
        _narrowed.table_items = (self, list(self.items.get(hash_key, {}).values()))
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        if narrow:
            _narrowed.table_items = None


_get_records = DynamoDBStreamsBackend.get_records


def _get_records_once(self, iterator_arn, limit):
    try:
        return _get_records(self, iterator_arn, limit)
    finally:
        self.shard_iterators.pop(iterator_arn, None)


Table.all_items = _partition_items
Table.query = _partition_query
DynamoDBStreamsBackend.get_records = _get_records_once

if __name__ == "__main__":
    main()
