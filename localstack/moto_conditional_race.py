"""Many threads put the same key with attribute_not_exists(pk), as processors
racing for one slot of a job's log do: DynamoDB lets exactly one through.
`python moto_conditional_race.py plain|patched` prints the most writers moto
let through on one key, as moto ships and as `moto_server.py` patches it.
An end-to-end test runs it (tests/tests/emulators.rs)."""
import sys, threading, importlib.util
sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose the race
from moto.dynamodb.models import DynamoDBBackend
if sys.argv[1] == "patched":
    spec = importlib.util.spec_from_file_location("ms", __file__.replace("moto_conditional_race.py", "moto_server.py"))
    ms = importlib.util.module_from_spec(spec); spec.loader.exec_module(ms)
b = DynamoDBBackend("us-east-1", "000000000000")
b.create_table("t", schema=[{"AttributeName": "pk", "KeyType": "HASH"}], throughput=None,
               attr=[{"AttributeName": "pk", "AttributeType": "S"}], global_indexes=None, indexes=None, streams=None,
               billing_mode="PAY_PER_REQUEST", sse_specification=None, tags=[], deletion_protection_enabled=False, warm_throughput=None)
worst = 0
for key in range(300):
    wins = []
    def put(n):
        try:
            b.put_item("t", {"pk": {"S": f"k{key}"}, "n": {"N": str(n)}}, condition_expression="attribute_not_exists(pk)")
            wins.append(n)
        except Exception:
            pass
    threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    worst = max(worst, len(wins))
print(sys.argv[1], "most writers let through on one key:", worst)
