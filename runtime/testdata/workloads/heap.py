# A Python interpreter holding a large heap: 200 MiB of random bytes in
# 1 MiB bytearrays plus a dict of 200,000 small objects, and a counter loop.
# It writes "count heapsum" to /tmp/py.status ten times a second; when
# /tmp/py.check appears it recomputes the checksum from the heap it holds and
# writes it to /tmp/py.check.out.
import hashlib, os, time

chunks = [bytearray(os.urandom(1 << 20)) for _ in range(200)]
objs = {i: ("k%d" % i, i * i, [i] * 3) for i in range(200000)}


def heapsum():
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    for i in range(0, len(objs), 997):
        k, sq, l = objs[i]
        h.update(("%s:%d:%d" % (k, sq, sum(l))).encode())
    return h.hexdigest()


def put(path, text):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


total = heapsum()
n = 0
while True:
    n += 1
    put("/tmp/py.status", "%d %s\n" % (n, total))
    if os.path.exists("/tmp/py.check"):
        os.unlink("/tmp/py.check")
        put("/tmp/py.check.out", heapsum() + "\n")
    time.sleep(0.1)
