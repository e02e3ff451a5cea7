"""Building an item costs moto a size per attribute, not per attribute
squared. `python moto_item_size.py plain|patched` stores items of 10 and
80 attributes and prints how many attribute sizes moto computed for each,
whether each came back as stored, and whether an item over the 400 KB
limit is refused; as moto ships and as `moto_server.py` patches it.
An end-to-end test runs it (tests/tests/emulators.rs)."""
import sys, importlib.util
from moto import mock_aws
import boto3
from moto.dynamodb.models.dynamo_type import DynamoType

if sys.argv[1] == "patched":
    spec = importlib.util.spec_from_file_location("ms", __file__.replace("moto_item_size.py", "moto_server.py"))
    ms = importlib.util.module_from_spec(spec); spec.loader.exec_module(ms)

sized = 0
_size = DynamoType.size


def counted_size(self):
    global sized
    sized += 1
    return _size(self)


@mock_aws
def run():
    global sized
    db = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    DynamoType.size = counted_size
    found = []
    for attributes in (10, 80):
        item = {"pk": {"S": "a"}, "sk": {"S": str(attributes)}, "m": {"M": {"n": {"N": "1"}, "b": {"B": b"\x00\x01"}}}}
        item.update({f"a{i}": {"S": "v" * 20} for i in range(attributes - 3)})
        sized = 0
        db.put_item(TableName="t", Item=item)
        put = sized
        same = db.get_item(TableName="t", Key={"pk": item["pk"], "sk": item["sk"]})["Item"] == item
        found.append(f"{attributes} attributes: {put} sizes, {'as stored' if same else 'changed'}")
    try:
        db.put_item(TableName="t", Item={"pk": {"S": "big"}, "sk": {"S": "x"}, "v": {"S": "x" * 406_000}})
        found.append("over the limit: stored")
    except db.exceptions.ClientError as e:
        found.append(f"over the limit: {e.response['Error']['Code']}")
    print(sys.argv[1], "; ".join(found))


run()
