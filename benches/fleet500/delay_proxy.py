#!/usr/bin/env python3
"""A TCP proxy that makes one simulated host slow: everything the host sends back reaches the
client DELAY seconds late, and so does the connection's acceptance, as `tc qdisc add dev eth0
root netem delay DELAY` on the host's own interface would (netem is not built into the kernel
of the machines the benchmarks run on, so this does the same in user space).

    delay_proxy.py LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT DELAY

benches/fleet500.sh runs it inside the slow host's network namespace and redirects that host's
incoming port 22 to it (iptables REDIRECT, in that namespace only); it forwards to the host's
own sshd. It listens only on the address it is given, and stops on SIGTERM.
"""
import asyncio
import signal
import sys

listen_addr, listen_port, target_addr, target_port, delay = sys.argv[1:6]
listen_port, target_port, delay = int(listen_port), int(target_port), float(delay)


async def pump(reader, writer, lag):
    """Copies reader to writer; with lag, each chunk is written lag seconds after it was read,
    in order (a queue of (due time, bytes)), so the stream is delayed, not slowed."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await queue.put((loop.time() + lag, data))
    except ConnectionError:
        pass
    await queue.put((loop.time() + lag, None))
    try:
        await sender
    except ConnectionError:
        pass


async def handle(client_r, client_w):
    try:
        await asyncio.sleep(delay)  # the SYN-ACK a netem delay holds back
        host_r, host_w = await asyncio.open_connection(target_addr, target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pump(client_r, host_w, 0.0), pump(host_r, client_w, delay),
                         return_exceptions=True)


async def main():
    server = await asyncio.start_server(handle, listen_addr, listen_port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


asyncio.run(main())
