"""Opens as many TCP connections to HOST:PORT as the machine allows for SECONDS, holding them,
then closes them all and prints how many were opened. Loopback only; stops by itself.

Usage: flood.py HOST PORT SECONDS
"""
import errno
import resource
import socket
import sys
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
failures = 0
until = time.time() + seconds
while time.time() < until:
    s = None
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect((host, port))
    except BlockingIOError:
        pass
    except OSError as e:
        if s is not None:
            s.close()
        failures += 1
        if e.errno in (errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS):
            time.sleep(0.01)
        continue
    held.append(s)
opened = len(held)
for s in held:
    s.close()
print(opened, failures)
