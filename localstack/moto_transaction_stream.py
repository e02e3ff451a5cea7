"""A transaction DynamoDB cancels writes nothing, and the table's stream
reads on. moto 5.2.5 applies a transaction's items one by one and, when one
fails its condition, puts back deep copies of the whole tables: the writes
it made reach the stream first, and the stream a reader holds an iterator
on is no longer the table's (it never sees another record). `python
moto_transaction_stream.py plain|patched` holds a reader on the stream,
cancels a transaction, writes one item, and prints what the reader saw, as
moto ships and as `moto_server.py` patches it. An end-to-end test runs it
(tests/tests/emulators.rs)."""
import sys, importlib.util
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodbstreams.models import ShardIterator
if sys.argv[1] == "patched":
    spec = importlib.util.spec_from_file_location("ms", __file__.replace("moto_transaction_stream.py", "moto_server.py"))
    ms = importlib.util.module_from_spec(spec); spec.loader.exec_module(ms)
b = DynamoDBBackend("us-east-1", "000000000000")
b.create_table("t", schema=[{"AttributeName": "pk", "KeyType": "HASH"}], throughput=None,
               attr=[{"AttributeName": "pk", "AttributeType": "S"}], global_indexes=None, indexes=None,
               streams={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
               billing_mode="PAY_PER_REQUEST", sse_specification=None, tags=[], deletion_protection_enabled=False, warm_throughput=None)
reader = ShardIterator(None, b.get_table("t").stream_shard, "LATEST")
try:
    b.transact_write_items([
        {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "absent"}}, "ConditionExpression": "attribute_exists(pk)"}},
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "cancelled"}}}},
    ])
    print("the transaction was not cancelled"); sys.exit(1)
except Exception as e:
    assert type(e).__name__ == "TransactionCanceledException", e
b.put_item("t", {"pk": {"S": "after"}})
seen = [r["dynamodb"]["Keys"]["pk"]["S"] for r in reader.stream_shard.get(reader.sequence_number, 100)]
stored = sorted(i.attrs["pk"].value for i in b.get_table("t").all_items())
print(sys.argv[1], "stored:", ",".join(stored), "stream read:", ",".join(seen) or "-")
