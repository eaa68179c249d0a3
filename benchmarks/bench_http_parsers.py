import time, h11, httptools
resp = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 07:50:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
N = 20000
# h11: one connection, feed one response at a time (the keep-alive loop flood does)
c = h11.Connection(h11.CLIENT)
req = h11.Request(method="GET", target="/", headers=[("Host", "x")])
t = time.perf_counter()
for i in range(N):
    c.send(req); c.send(h11.EndOfMessage())
    c.receive_data(resp)
    while True:
        e = c.next_event()
        if type(e) is h11.EndOfMessage: break
    c.start_next_cycle()
h = (time.perf_counter() - t) / N * 1e6
class P:
    n = 0
    def on_message_complete(self): self.n += 1
p = P(); parser = httptools.HttpResponseParser(p)
t = time.perf_counter()
for i in range(N):
    parser.feed_data(resp)
ht = (time.perf_counter() - t) / N * 1e6
assert p.n == N
print(f"h11 {h:.2f} us/response, httptools {ht:.2f} us/response, ratio {h/ht:.1f}x")
