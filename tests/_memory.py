"""What the subprocess memory tests share: source text defining ``peak_anonymous_rise``.

``peak_anonymous_rise(call)`` runs ``call()`` and returns its result with the peak rise of the
process's anonymous resident memory (``RssAnon`` in /proc/self/status, sampled every
millisecond by a thread) above its value before the call. File-backed pages (a memmap's) do
not count: the kernel may drop them at will.
"""

PEAK_ANONYMOUS_RISE = '''
import threading, time

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def peak_anonymous_rise(call):
    peak, done = [0], threading.Event()
    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], status("RssAnon"))
            time.sleep(0.001)
    before = status("RssAnon")
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = call()
    finally:
        done.set()
        watcher.join()
    return result, max(peak[0], status("RssAnon")) - before
'''
