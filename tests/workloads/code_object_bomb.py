"""A hostile Python program: cheap for it, costly for a profiler that keeps
every code object it sees. One function with a large line table (its
padding never runs) is copied into new code objects under new names
(`code.replace`: the copies share one line table here, but a profiler
reads each one's), chained 100 deep, and run over and over for SECONDS."""
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5
padding = "".join(f"        v{i % 50} = {i}\n" for i in range(12000))
source = (
    "def f(depth, chain):\n"
    "    if depth < 0:\n" + padding +
    "    if depth:\n"
    "        return chain[depth - 1](depth - 1, chain)\n"
    "    start = time.perf_counter()\n"
    "    while time.perf_counter() - start < 0.002:\n"
    "        pass\n"
)
space = {"time": time}
exec(source, space)
template = space["f"].__code__
kept = []
made = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    chain = []
    for _ in range(100):
        made += 1
        code = template.replace(co_name=f"bomb{made}", co_qualname=f"bomb{made}")
        chain.append(type(space["f"])(code, space))
    kept.append(chain)
    del kept[:-200]
    chain[-1](99, chain)
print(made, "code objects")
