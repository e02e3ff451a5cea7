"""What one request costs the emulated DynamoDB does not grow with what the
table has seen. `python moto_growth.py plain|patched` fills a table with an
index and a stream, then prints how many passes over the whole table an
index query made, what it found, how many stream records moto still holds
once its reader has read them all (and while a second reader lags), what a
reader reads next, and how many item objects moto holds for its dashboard
(each one ever made, until the process ends); as moto ships and as
`moto_server.py` patches it.
An end-to-end test runs it (tests/tests/emulators.rs)."""
import sys, importlib.util
from moto import mock_aws
import boto3
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodbstreams.models import dynamodbstreams_backends
from moto.dynamodb.models.dynamo_type import Item

ms = None
if sys.argv[1] == "patched":
    spec = importlib.util.spec_from_file_location("ms", __file__.replace("moto_growth.py", "moto_server.py"))
    ms = importlib.util.module_from_spec(spec); spec.loader.exec_module(ms)
    ms.KEPT_PAST_READERS = 0.0  # trim as soon as every reader is past
    ms.TRIM_EVERY = 0.0


class CountedPasses(dict):
    """A table's partitions, counting the passes over all of them."""
    passes = 0

    def values(self):
        CountedPasses.passes += 1
        return super().values()


@mock_aws
def run():
    db = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    # mock_aws does not route the streams client: its backend is called as moto's server calls it.
    streams = dynamodbstreams_backends["123456789012"]["us-east-1"]
    s = lambda v: {"S": v}
    db.create_table(
        TableName="t", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "gpk", "gsk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{"IndexName": "by-g", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                 "KeySchema": [{"AttributeName": "gpk", "KeyType": "HASH"}, {"AttributeName": "gsk", "KeyType": "RANGE"}]}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    table = dynamodb_backends["123456789012"]["us-east-1"].get_table("t")
    arn = db.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    shard = table.stream_shard.id
    reader = streams.get_shard_iterator(arn, shard, "LATEST").arn
    lagging = streams.get_shard_iterator(arn, shard, "LATEST").arn

    for n in range(500):
        db.put_item(TableName="t", Item={"pk": s(f"other{n}"), "sk": s("x"), "gpk": s("busy"), "gsk": s(f"{n:04}")})
    for key in "abcd":
        db.put_item(TableName="t", Item={"pk": s(key), "sk": s("x"), "gpk": s("quiet"), "gsk": s(key)})
    query = lambda: [i["pk"]["S"] for i in db.query(TableName="t", IndexName="by-g", KeyConditionExpression="gpk = :p",
                                                    ExpressionAttributeValues={":p": s("quiet")})["Items"]]
    query()  # the first query on an index may read the table once
    db.update_item(TableName="t", Key={"pk": s("b"), "sk": s("x")}, UpdateExpression="REMOVE gpk")  # leaves the sparse index
    db.delete_item(TableName="t", Key={"pk": s("c"), "sk": s("x")})
    db.update_item(TableName="t", Key={"pk": s("other7"), "sk": s("x")}, UpdateExpression="SET gpk = :p",
                   ExpressionAttributeValues={":p": s("quiet")})
    partitions, table.items = table.items, CountedPasses(table.items)
    found = query()
    table.items = partitions

    def read_all(iterator):
        while True:
            out = streams.get_records(iterator, 1000)
            iterator = out["NextShardIterator"]
            if not out["Records"]:
                return iterator, out

    reader, _ = read_all(reader)
    reader, _ = read_all(reader)  # a later read: what every reader is past may go
    kept_while_lagging = len(table.stream_shard.items)
    read_all(lagging)
    reader, _ = read_all(reader)
    kept_once_read = len(table.stream_shard.items)
    db.put_item(TableName="t", Item={"pk": s("after"), "sk": s("x")})
    seen = [r["dynamodb"]["Keys"]["pk"]["S"] for r in streams.get_records(reader, 1000)["Records"]]
    # moto's BaseModel appends every instance it makes to a class list, for
    # its dashboard: every item written, copied for a query or projected.
    tracked = len(Item.instances_tracked)
    print(sys.argv[1], f"passes per index query: {CountedPasses.passes}; found: {','.join(found)};",
          f"stream records kept while a reader lags: {kept_while_lagging}, once read: {kept_once_read}; next read: {','.join(seen)};",
          f"items held for moto's dashboard: {tracked}")


run()
