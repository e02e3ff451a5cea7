"""moto_server, with four changes for the local cloud: a DynamoDB Query on a
table's own keys reads the queried partition instead of the whole table, a
stream's shard iterator is forgotten once GetRecords has used it, a
conditional write is atomic, and a cancelled transaction writes nothing.

moto 5.2.5 (pinned in moto.txt) answers every Query by sorting every item
of the table and then keeping those with the asked-for partition key:
O(n log n) in the table per query. Prism's single table holds the jobs,
their event logs and the WebSocket subscriptions, and the progress function
queries it for every event, so under the 500-job priority benchmark moto
spent most of a core sorting and the functions timed out waiting on it.
DynamoDB itself reads one partition. Here `Table.all_items` is narrowed to
the queried partition for the duration of that one query (per thread: moto
serves requests on threads); the filtering, ordering, paging and limits are
moto's own code. A query on an index is narrowed to the items of its index
partition by one pass over the table, without sorting it (the API's quota
counts an owner's active jobs through an index on every submission; with
the whole-table sort that doubled the submit latency of the load test).
Scans are untouched.

moto keeps every shard iterator it ever issued, and each GetRecords issues a
new one (~650 bytes). The local cloud reads the table's stream ten times a
second per shard, as Lambda's event source reads it, and never reuses an
iterator, so without this moto would grow by megabytes an hour while idle.

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

Started by `prism` as `python moto_server.py -H HOST -p PORT`.
"""

import threading

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
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


def _index_partition(self, conditions):
    """The table's items in one index partition: one pass, no sorting."""
    found = []
    for part in self.items.values():
        for item in part.values() if isinstance(part, dict) else [part]:
            # An item without the attribute is not in the index (and moto's
            # DynamoType cannot be compared with None).
            if all(item.attrs.get(attr) is not None and item.attrs[attr] == value for attr, value in conditions):
                found.append(item)
    return found


def _partition_query(self, hash_key, *args, **kwargs):
    # moto's backend passes index_name as the eighth positional argument.
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    narrow = False
    if index_name is None and hash_key is not None and self.range_key_attr is not None:
        # `items` maps partition key -> {sort key -> item}; .get creates nothing.
        _narrowed.table_items = (self, list(self.items.get(hash_key, {}).values()))
        narrow = True
    elif index_name is not None and self.range_key_attr is not None:
        conditions = _index_conditions(self, index_name, hash_key, args, kwargs)
        if conditions:
            _narrowed.table_items = (self, _index_partition(self, conditions))
            narrow = True
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


_writes = threading.RLock()


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


DynamoDBBackend.transact_write_items = _transact_write_items
for _write in ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"):
    setattr(DynamoDBBackend, _write, _atomic(getattr(DynamoDBBackend, _write)))

Table.all_items = _partition_items
Table.query = _partition_query
DynamoDBStreamsBackend.get_records = _get_records_once

if __name__ == "__main__":
    main()
