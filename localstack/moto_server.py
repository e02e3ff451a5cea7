"""moto_server, with six changes for the local cloud: a DynamoDB Query
reads the queried partition (of the table or of an index) instead of the
whole table, the stream's records and shard iterators are dropped once read,
item objects are not kept for moto's dashboard, a conditional write is
atomic, and a cancelled transaction writes nothing; and three that make a
request cheaper and one that makes building an item cheaper (the last
sections).

moto's `BaseModel` appends every instance it makes to a list on its class,
for the dashboard of its server: every item written, every copy a query
makes of what it read and every projection of it, every stream record and
iterator, kept until the process ends. The 10,000-job run's quota query
copied up to a thousand items per submission, and moto grew by about 8 MB a
second until the run had to stop at 15 GB. Items, stream records and shard
iterators are no longer tracked (moto_growth.py counts them).

moto 5.2.5 (pinned in moto.txt) answers every Query by sorting every item
of the table and then keeping those with the asked-for partition key:
O(n log n) in the table per query. Prism's single table holds the jobs,
their event logs and the WebSocket subscriptions, and the progress function
queried it for every event, so under the 500-job priority benchmark moto
spent most of a core sorting and the functions timed out waiting on it.
DynamoDB itself reads one partition. Here `Table.all_items` is narrowed to
the queried partition for the duration of that one query (per thread: moto
serves requests on threads); the filtering, ordering, paging and limits are
moto's own code. An index's partitions are kept as DynamoDB keeps an index:
built by one pass on the index's first query, then moved by every write
(moto updates items in place). The API's quota counts an owner's active
jobs through an index on every submission, and a pass over the table per
count slowed the 10,000-job run to a crawl as its table grew. Scans are
untouched.

moto keeps every shard iterator it ever issued, and each GetRecords issues a
new one (~650 bytes). The local cloud reads the table's stream ten times a
second per shard, as Lambda's event source reads it, and never reuses an
iterator, so without this moto would grow by megabytes an hour while idle.
moto also keeps every stream record (each with the item's image) for as
long as it runs, where DynamoDB Streams keeps 24 hours: the 10,000-job run
grew by a gigabyte every two minutes. Here records every live reader's
iterator has been past for five minutes are dropped, and iterators unused
for fifteen minutes expire, as on DynamoDB Streams (tested by
moto_growth.py).

moto serves requests on threads and checks a write's condition, then
writes, with nothing in between to stop another thread: two `PutItem`s with
`attribute_not_exists(pk)` on the same key could both pass, the second
overwriting the first, where DynamoDB lets exactly one through. Prism's job
log relies on that (two processors writing the same sequence number: one
wins, the other re-reads); under duplicate deliveries the race let both
"win" and a job recorded `job.completed` twice. Every DynamoDB write here
takes one lock, as every write to an item is serialised in DynamoDB.

moto applies a transaction's items one by one and, when one fails its
condition, puts back deep copies of every table it touched: a copy of the
whole table per item (Prism keeps every job in one table), the failed
transaction's writes already on the stream, and the stream's readers left on
the discarded table's stream, never to see another record (the publisher
would go silent; reproduced by moto_transaction_stream.py). DynamoDB checks
every condition against the items as they were and then writes all or
nothing; here the conditions are checked first, under the write lock, and
only a transaction whose conditions all hold is written.

Where moto's time went under the load benchmark (py-spy, 30 s of the
10,000-job run, moto at 75% of a core): a fifth serialising GetRecords
answers, whose records moto walks through the API model value by value;
a tenth writing the request log through `logging`; and a tenth finding the
backend of each request, a match against every service's URL patterns,
under a lock all request threads share. Here GetRecords answers are one
`json.dumps` of the records, which are already in the wire's form (as moto
answered every DynamoDB call before its serialiser); the backend of a
service's host is looked up once; and each request is one line written
straight to the log, naming its operation (`AWS dynamodb.Query => 200`, as
LocalStack writes it) where werkzeug's line named only `POST /`.

A second profile, of a 3,000-job run after those changes, found a tenth of
moto's time building items: moto checks the 400 KB item limit as each
attribute is set, summing the whole item again each time, so an item of n
attributes costs n² sizes (a job item has dozens). Here an item is sized
once as it is built, against the same limit; attributes set later (an
`UpdateItem`) are still checked one by one as moto checks them.

Started by `prism` as `python moto_server.py -H HOST -p PORT`.
"""

import os
import sys
import threading
import time
import tracemalloc
from collections import deque
from datetime import datetime

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.core.common_models import BaseModel
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.utilities import bytesize
from moto.dynamodb.models.table import StreamRecord, StreamShard, Table
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main
from werkzeug.serving import WSGIRequestHandler

_narrowed = threading.local()
# Every write to the tables, and every read of what writes change in place.
_writes = threading.RLock()
_all_items = Table.all_items
_query = Table.query


def _partition_items(self):
    narrowed = getattr(_narrowed, "table_items", None)
    if narrowed is not None and narrowed[0] is self:
        return list(narrowed[1])
    return _all_items(self)


def _index_conditions(self, index_name, hash_key, args, kwargs):
    """The (attribute, value) pairs an index query's partition must match."""
    conditions = kwargs.get("hash_key_conditions") or (args[9] if len(args) > 9 else None)
    if conditions:
        return list(conditions)
    index = {i.name: i for i in self.all_indexes()}.get(index_name)
    if index is None or hash_key is None:
        return None
    attrs = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
    return [(attrs[0], hash_key)] if len(attrs) == 1 else None


def _index_partitions(table):
    """Per index with a partition key: (attribute, {value: {item key: item}},
    {item key: value}, projection), built by one pass over the table on the
    first query and kept by every write from then on (`_reindex`). An index
    that projects only some attributes holds the projected items, as
    DynamoDB's index does: moto sorts, sizes and deep-copies what a query
    reads, and the quota's count on a keys-only index read whole jobs."""
    found = table.__dict__.get("_prism_index_partitions")
    if found is None:
        found = {}
        for index in table.all_indexes():
            attrs = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            projected = (index.projection or {}).get("ProjectionType") in ("KEYS_ONLY", "INCLUDE")
            if len(attrs) == 1:
                found[index.name] = (attrs[0], {}, {}, index.project if projected else None)
        table._prism_index_partitions = found
        for part in table.items.values():
            for item in part.values() if isinstance(part, dict) else [part]:
                _reindex(table, item)
    return found


def _reindex(table, item, removed=False):
    """Move `item` to the index partitions its attributes put it in now."""
    indexes = table.__dict__.get("_prism_index_partitions")
    if not indexes or item is None:
        return
    key = (item.hash_key, item.range_key)
    for attr, partitions, placed, project in indexes.values():
        before = placed.pop(key, None)
        if before is not None:
            partition = partitions[before]
            partition.pop(key, None)
            if not partition:
                del partitions[before]
        value = None if removed else item.attrs.get(attr)
        # An item without the attribute is not in the index (sparse indexes).
        if value is not None:
            partitions.setdefault(value, {})[key] = project(item) if project else item
            placed[key] = value


def _index_partition(self, index_name, conditions):
    """The table's items in one index partition, read from the kept map."""
    with _writes:
        index = _index_partitions(self).get(index_name)
        if index is None or len(conditions) != 1 or conditions[0][0] != index[0]:
            return None
        return list(index[1].get(conditions[0][1], {}).values())


def _partition_query(self, hash_key, *args, **kwargs):
    # moto's backend passes index_name as the eighth positional argument.
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    narrow = False
    if index_name is None and hash_key is not None and self.range_key_attr is not None:
        # `items` maps partition key -> {sort key -> item}; .get creates nothing.
        with _writes:
            _narrowed.table_items = (self, list(self.items.get(hash_key, {}).values()))
        narrow = True
    elif index_name is not None and self.range_key_attr is not None:
        conditions = _index_conditions(self, index_name, hash_key, args, kwargs)
        partition = _index_partition(self, index_name, conditions) if conditions else None
        if partition is not None:
            _narrowed.table_items = (self, partition)
            narrow = True
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        if narrow:
            _narrowed.table_items = None


_get_records = DynamoDBStreamsBackend.get_records
_iterator_init = ShardIterator.__init__
_shard_get = StreamShard.get

# How long a record is kept after every reader's iterator was past it, and
# how long an iterator lives unused (DynamoDB Streams: 15 minutes), and how
# often the kept records are trimmed, in seconds.
KEPT_PAST_READERS = 300.0
ITERATOR_LIFETIME = 900.0
TRIM_EVERY = 1.0


def _stamped_iterator(self, *args, **kwargs):
    _iterator_init(self, *args, **kwargs)
    self.issued = time.monotonic()


def _get_records_once(self, iterator_arn, limit):
    try:
        return _get_records(self, iterator_arn, limit)
    finally:
        self.shard_iterators.pop(iterator_arn, None)
        _trim_read_records(self)


def _trim_read_records(streams):
    """Drop the records every live reader was past KEPT_PAST_READERS ago.

    A reader's position is its newest iterator's. The margin covers a reader
    that read ahead, failed, and reads again from its last checkpoint (the
    local cloud's poller does); iterators older than ITERATOR_LIFETIME have
    expired, as on DynamoDB Streams, and hold nothing back."""
    now = time.monotonic()
    if now - streams.__dict__.get("_prism_trimmed_at", float("-inf")) < TRIM_EVERY:
        return
    streams._prism_trimmed_at = now
    with _writes:
        positions = {}
        for arn, iterator in list(streams.shard_iterators.items()):
            if now - getattr(iterator, "issued", now) > ITERATOR_LIFETIME:
                del streams.shard_iterators[arn]
                continue
            shard = iterator.stream_shard
            positions[shard] = min(positions.get(shard, iterator.sequence_number), iterator.sequence_number)
        for shard, position in positions.items():
            marks = shard.__dict__.setdefault("_prism_read_marks", deque())
            marks.append((now, position))
            safe = None
            while marks and now - marks[0][0] >= KEPT_PAST_READERS:
                safe = marks.popleft()[1]
            read = 0 if safe is None else min(safe - shard.starting_sequence_number, len(shard.items))
            if read > 0:
                del shard.items[:read]
                shard.starting_sequence_number += read


def _kept_records(self, start, quantity):
    """moto's `get`, on the records kept: a trimmed position reads from the oldest."""
    with _writes:
        return _shard_get(self, max(start, self.starting_sequence_number), quantity)


def _atomic(write):
    def locked(self, *args, **kwargs):
        with _writes:
            return write(self, *args, **kwargs)

    return locked


def _transact_write_items(self, transact_items):
    """All conditions checked against the items as they are, then every write or none."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    ops, targets = [], set()
    for item in transact_items:
        if len(item) != 1:
            raise TransactWriteSingleOpException()
        op_type, op = next(iter(item.items()))
        if op_type not in ("ConditionCheck", "Put", "Delete", "Update"):
            raise MockValidationException(f"Unsupported transaction operation {op_type}")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            keys = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
            key = {k: op["Item"][k] for k in keys}
        else:
            key = op["Key"]
        target = (op["TableName"], str(dict(sorted(key.items()))))
        if target in targets:
            raise MultipleTransactionsException()
        targets.add(target)
        ops.append((op_type, op, key))
    reasons = []
    for op_type, op, key in ops:
        condition = op.get("ConditionExpression")
        current = self.get_item(op["TableName"], key)
        if condition is None or get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current):
            reasons.append((None, None, None))
            continue
        old = current.to_json()["Attributes"] if current and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None
        reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    for op_type, op, key in ops:
        names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        if op_type == "Put":
            self.put_item(op["TableName"], op["Item"])
        elif op_type == "Delete":
            self.delete_item(op["TableName"], key)
        elif op_type == "Update":
            self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                             expression_attribute_names=names, expression_attribute_values=values)


_table_put, _table_delete = Table.put_item, Table.delete_item
_update_item, _update_table = DynamoDBBackend.update_item, DynamoDBBackend.update_table


def _put_indexed(self, *args, **kwargs):
    item = _table_put(self, *args, **kwargs)
    _reindex(self, item)
    return item


def _delete_indexed(self, hash_key, range_key):
    item = _table_delete(self, hash_key, range_key)
    _reindex(self, item, removed=True)
    return item


def _update_indexed(self, table_name, *args, **kwargs):
    # moto updates the stored item in place: its index partitions move here.
    item = _update_item(self, table_name, *args, **kwargs)
    _reindex(self.get_table(table_name), item)
    return item


def _update_table_unindexed(self, name, *args, **kwargs):
    # New or deleted indexes: the partitions are built again on the next query.
    with _writes:
        table = _update_table(self, name, *args, **kwargs)
        table.__dict__.pop("_prism_index_partitions", None)
        return table


# Instances moto makes by the thousand a second and never keeps itself.
_UNTRACKED = (Item, StreamRecord, ShardIterator)


def _new_model(cls, *args, **kwargs):
    instance = object.__new__(cls)
    if not issubclass(cls, _UNTRACKED):
        cls.instances_tracked.append(instance)
    return instance


BaseModel.__new__ = _new_model


def _get_records_as_json(self):
    """GetRecords' answer as moto's DynamoDB answers were: its records are
    already DynamoDB JSON; only the creation time (epoch seconds) and binary
    values (base64) need the encoder."""
    limit = self._get_param("Limit")
    return dynamo_json_dump(self.backend.get_records(self._get_param("ShardIterator"), 1000 if limit is None else limit))


def _item_sized_once(self, hash_key, range_key, attrs):
    """moto's `Item.__init__`, with the item's size summed once (moto's
    `LimitedSizeDict` sums the whole item for every attribute set)."""
    self.hash_key = hash_key
    self.range_key = range_key
    values = {key: DynamoType(value) for key, value in attrs.items()}
    # The sum moto's check makes, in one pass: each name's bytes and each value's size.
    if sum(bytesize(key) + value.size() for key, value in values.items()) > 405000:
        raise ItemSizeTooLarge
    self.attrs = LimitedSizeDict()
    dict.update(self.attrs, values)


_serialized = DynamoHandler.serialized
# The item reads and writes: their answers are items and counts, nothing the
# API model's serialiser changes.
_ANSWERED_AS_JSON = {"GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "TransactGetItems", "TransactWriteItems"}


def _item_answers_as_json(self, action_result):
    """An item operation's answer as one `json.dumps`, as moto answered
    before its serialiser: DynamoDB's JSON protocol is the result itself."""
    result = action_result.result
    if isinstance(result, Exception) or self._get_action() not in _ANSWERED_AS_JSON:
        return _serialized(self, action_result)
    headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
    return 200, headers, dynamo_json_dump(result)


_backend_for_host = DomainDispatcherApplication.get_backend_for_host
_backends_by_host = {}


def _backend_for_host_once(self, host):
    """A host's backend, matched once: the hosts are a service's endpoint in
    a region, a handful for the whole run."""
    try:
        return _backends_by_host[host]
    except KeyError:
        backend = _backends_by_host[host] = _backend_for_host(self, host)
        return backend


# X-Amz-Target prefixes (`DynamoDB_20120810`) by the service names LocalStack's log uses.
_SERVICES = {"DynamoDB": "dynamodb", "DynamoDBStreams": "dynamodbstreams", "AmazonSQS": "sqs", "AWSEvents": "events"}


def _log_request(self, code="-", size="-"):
    """One line per request, naming its operation (or its method and path
    when the protocol names it in the body or the URL)."""
    target = self.headers.get("X-Amz-Target") if getattr(self, "headers", None) else None
    if target and "." in target:
        prefix, operation = target.split(".", 1)
        service = prefix.split("_", 1)[0]
        name = f"{_SERVICES.get(service, service.lower())}.{operation}"
    else:
        name = getattr(self, "requestline", "-").rsplit(" ", 1)[0].translate(self._control_char_table)
    now = datetime.now().isoformat(timespec="milliseconds")
    sys.stderr.write(f"{now} INFO moto.request.aws : AWS {name} => {code}\n")
Item.__init__ = _item_sized_once
Table.put_item = _put_indexed
Table.delete_item = _delete_indexed
DynamoDBBackend.update_item = _update_indexed
DynamoDBBackend.update_table = _update_table_unindexed
DynamoDBBackend.transact_write_items = _transact_write_items
for _write in ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"):
    setattr(DynamoDBBackend, _write, _atomic(getattr(DynamoDBBackend, _write)))

Table.all_items = _partition_items
Table.query = _partition_query
DynamoDBStreamsBackend.get_records = _get_records_once
ShardIterator.__init__ = _stamped_iterator
StreamShard.get = _kept_records
DynamoDBStreamsHandler.get_records = _get_records_as_json
DynamoHandler.serialized = _item_answers_as_json
DomainDispatcherApplication.get_backend_for_host = _backend_for_host_once
WSGIRequestHandler.log_request = _log_request

if __name__ == "__main__" and os.environ.get("PRISM_MOTO_MEMORY_REPORT"):
    # Where moto's memory goes: every minute the largest allocation sites
    # are written to the file this names (tracing slows moto; for diagnosis).
    tracemalloc.start(8)

    def _memory_reports():
        while True:
            time.sleep(60)
            stats = tracemalloc.take_snapshot().statistics("traceback")[:10]
            with open(os.environ["PRISM_MOTO_MEMORY_REPORT"], "w") as report:
                for stat in stats:
                    report.write(f"{stat.size / 1e6:.1f} MB in {stat.count} blocks\n  " + "\n  ".join(stat.traceback.format()) + "\n\n")

    threading.Thread(target=_memory_reports, daemon=True).start()

if __name__ == "__main__":
    main()
