#!/usr/bin/python3
"""powercut: a FUSE filesystem whose power can be cut.

    powercut.py mount BACKING MOUNTPOINT [--keep F] [--seed N]   serve BACKING at MOUNTPOINT (foreground)
    powercut.py cut MOUNTPOINT                                    cut the power, unmount, stop the daemon

Every change goes to BACKING at once, so that the program on MOUNTPOINT sees its own writes; what is
not durable yet is remembered in memory, with the durable bytes it replaced. A cut restores those,
so that BACKING holds what the disk held when the power went (see README.md for the model):
  * file data, size changes, truncation and fallocate are volatile until fsync/fdatasync of the file;
  * creating, linking, renaming and removing entries is volatile until some directory is fsynced,
    which makes every earlier entry change durable (a journal commits in order);
  * --keep F (default 0): each 512-byte sector of a volatile write reached the disk early with
    probability F, independently (the latest write of a sector that did wins: torn, out of order);
    of a file's volatile size changes, and of the volatile entry changes, a random prefix survives,
    each one with probability F after the previous one did (none when F is 0);
  * a clean unmount (no cut) is a clean shutdown: everything stays.
The draws depend only on --seed and on the sequence of operations on each path.
"""
import argparse
import errno
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback

SECTOR = 512
UNDO_DIR = '.powercut-undo'  # in BACKING: hard links that keep removed/replaced files restorable


def control_address(mnt):
    """Abstract unix socket of the daemon serving `mnt` (nothing to clean up)."""
    return '\0powercut:' + os.path.normpath(os.path.abspath(mnt))


def runs(items):
    """[(offset, bytes)] sorted by offset -> the same data with touching pieces joined."""
    out = []
    for off, data in sorted(items):
        if out and out[-1][0] + len(out[-1][1]) == off:
            out[-1][1].extend(data)
        else:
            out.append((off, bytearray(data)))
    return out


class Inode:
    """One backing file, opened once, and what happened to it since it was last durable.

    Durable content of byte b < size0: in `saved` when a write or truncation touched its sector
    (saved before the first change), else in `tail` when b >= floor (cut off by a truncation),
    else still in the backing file."""

    __slots__ = ('fd', 'ino', 'refs', 'dirty', 'size0', 'floor', 'saved', 'tail',
                 'early', 'early_size', 'early_zero', 'sizes_open', 'kept', 'lost')

    def __init__(self, fd, ino):
        self.fd, self.ino, self.refs = fd, ino, 0
        self.durable()

    def durable(self):
        self.dirty = False
        self.size0 = self.floor = 0
        self.saved = {}           # sector -> durable bytes of it (below floor)
        self.tail = []            # [(offset, durable bytes)] cut off by truncations, lowest last
        self.early = {}           # sector -> 512 bytes that reached the disk early (keep > 0)
        self.early_size = None    # file size that reached the disk early
        self.early_zero = None    # lowest truncation point that reached the disk early
        self.sizes_open = True    # no size change has failed to reach the disk yet
        self.kept = self.lost = 0

    def begin(self):
        if not self.dirty:
            self.dirty = True
            self.size0 = self.floor = os.fstat(self.fd).st_size

    def size(self):
        return os.fstat(self.fd).st_size

    def save(self, start, end):
        """Remember the durable bytes of the sectors overlapping [start, end) before they change."""
        hi = min(end, self.floor)
        if start >= hi:
            return
        first, last = start // SECTOR, (hi - 1) // SECTOR
        todo = [s for s in range(first, last + 1) if s not in self.saved]
        if not todo:
            return
        base = todo[0] * SECTOR
        buf = os.pread(self.fd, min(self.floor, (todo[-1] + 1) * SECTOR) - base, base)
        for s in todo:
            self.saved[s] = buf[s * SECTOR - base:(s + 1) * SECTOR - base]

    # ---- keep > 0: what reached the disk before the cut. early() is True with probability keep.
    def early_sectors(self, first, last, early):
        survivors = [s for s in range(first, last + 1) if early()]
        self.kept += len(survivors)
        self.lost += last - first + 1 - len(survivors)
        if survivors:
            base = survivors[0] * SECTOR
            buf = os.pread(self.fd, (survivors[-1] + 1) * SECTOR - base, base)
            for s in survivors:
                sector = buf[s * SECTOR - base:(s + 1) * SECTOR - base]
                self.early[s] = sector + bytes(SECTOR - len(sector))

    def early_resize(self, length, early, truncation):
        """Size changes are metadata, committed in order: a prefix of them reached the disk."""
        if not self.sizes_open:
            return
        if not early():
            self.sizes_open = False
            return
        if truncation:
            disk = self.size0 if self.early_size is None else self.early_size
            z = min(disk, length)      # on the disk, nothing at or after z outlives the truncation
            self.early_zero = z if self.early_zero is None else min(self.early_zero, z)
            for s in [s for s in self.early if (s + 1) * SECTOR > z]:
                if s * SECTOR >= z:
                    del self.early[s]
                else:
                    cut = z - s * SECTOR
                    self.early[s] = self.early[s][:cut] + bytes(SECTOR - cut)
        self.early_size = length

    # ---- changes (the backing file always holds what the program sees)
    def write(self, data, offset, early):
        self.begin()
        end = offset + len(data)
        grows = end > self.size()
        self.save(offset, end)
        n = os.pwrite(self.fd, data, offset)
        if n != len(data):
            raise OSError(errno.EIO, 'short write to the backing file')
        if early:
            if grows:
                self.early_resize(end, early, False)
            self.early_sectors(offset // SECTOR, (end - 1) // SECTOR, early)
        else:
            self.lost += (end - 1) // SECTOR - offset // SECTOR + 1
        return n

    def truncate(self, length, early):
        self.begin()
        if length < self.floor:        # keep the durable bytes that are about to go
            self.tail.append((length, os.pread(self.fd, self.floor - length, length)))
            self.floor = length
        os.ftruncate(self.fd, length)
        if early:
            self.early_resize(length, early, True)

    # ---- the cut
    def restore(self):
        """Put the file back to its durable content, then lay over it what reached the disk early."""
        fd = self.fd
        for off, data in self.tail:
            os.pwrite(fd, data, off)
        for off, data in runs((s * SECTOR, d) for s, d in self.saved.items()):
            os.pwrite(fd, data, off)
        os.ftruncate(fd, self.size0)
        if self.early or self.early_size is not None:
            final = self.size0 if self.early_size is None else self.early_size
            if self.early_zero is not None:
                os.ftruncate(fd, self.early_zero)
            for off, data in runs((s * SECTOR, d) for s, d in self.early.items() if s * SECTOR < final):
                os.pwrite(fd, data[:final - off], off)
            os.ftruncate(fd, final)


def make_filesystem(fusepy):
    FuseOSError, Operations = fusepy.FuseOSError, fusepy.Operations

    class PowerCut(Operations):
        use_ns = True           # times in integer nanoseconds
        flag_nullpath_ok = 1    # reads and writes through a handle of a removed file get no path
        # Not served (ENOSYS), so that the kernel stops asking: without this, every write would first
        # ask for the security.capability attribute, one more round trip.
        getxattr = setxattr = listxattr = removexattr = None

        def __init__(self, root, keep, seed):
            self.root, self.keep, self.seed = root, keep, seed
            self.mutex = threading.Lock()  # one operation at a time, and the cut alone (not "lock":
                                           # fusepy would serve it as the FUSE lock operation)
            self.inodes = {}        # backing (st_dev, st_ino) -> Inode, while open or not durable
            self.handles = {}       # fh -> Inode
            self.next_fh = 1
            self.draws = {}         # path -> early(): the draws of each path are a stream of their own
            self.journal = []       # volatile entry changes, oldest first: (undo, args, hard link aside)
            self.aside_dir = os.path.join(root, UNDO_DIR)
            self.asides = 0
            self.dead = False
            shutil.rmtree(self.aside_dir, ignore_errors=True)
            os.mkdir(self.aside_dir, 0o700)

        # ---- helpers
        def real(self, path):
            if path.split('/')[1:2] == [UNDO_DIR]:
                raise FuseOSError(errno.ENOENT)
            return self.root + path if path != '/' else self.root

        def check(self):
            if self.dead:
                raise FuseOSError(errno.EIO)

        def early(self, path):
            """None when keep is 0, else a draw that is True with probability keep. Seeded by the
            path, so that the draws do not depend on how operations on different files interleave."""
            if self.keep <= 0:
                return None
            key = path or '(removed)'
            draw = self.draws.get(key)
            if draw is None:
                rng, keep = random.Random(f'{self.seed}:{key}'), self.keep
                draw = self.draws[key] = lambda: rng.random() < keep
            return draw

        def adopt(self, fd):
            st = os.fstat(fd)
            ino = (st.st_dev, st.st_ino)
            node = self.inodes.get(ino)
            if node is not None:
                os.close(fd)
                return node
            node = self.inodes[ino] = Inode(fd, ino)
            return node

        def open_inode(self, path):
            real = self.real(path)
            try:
                fd = os.open(real, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR):
                    raise
                fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
            return self.adopt(fd)

        def node(self, path, fh):
            node = self.handles.get(fh) if fh else None
            return node if node is not None else self.open_inode(path)

        def handle(self, node):
            node.refs += 1
            fh, self.next_fh = self.next_fh, self.next_fh + 1
            self.handles[fh] = node
            return fh

        def let_go(self, node):
            """Close a file nobody has open and nothing volatile refers to."""
            if node.refs == 0 and not node.dirty and self.inodes.get(node.ino) is node:
                del self.inodes[node.ino]
                os.close(node.fd)

        def aside(self, real):
            """Keep what `real` names (about to be removed or replaced) so that it can be put back:
            ('file', hard link) or ('dir', mode); None if there is nothing."""
            try:
                st = os.lstat(real)
            except FileNotFoundError:
                return None
            if stat.S_ISDIR(st.st_mode):
                return ('dir', stat.S_IMODE(st.st_mode))
            self.asides += 1
            link = os.path.join(self.aside_dir, str(self.asides))
            os.link(real, link, follow_symlinks=False)
            return ('file', link)

        def drop_aside(self, kept):
            if kept and kept[0] == 'file':
                os.unlink(kept[1])

        def entry_change(self, undo, *args, kept=None):
            self.journal.append((undo, args, kept))

        # ---- undoing entry changes, newest first
        @staticmethod
        def put_back(real, kept):
            if kept is None:
                return
            if kept[0] == 'file':
                os.link(kept[1], real, follow_symlinks=False)
            else:
                os.mkdir(real, kept[1])

        @staticmethod
        def undo_create(real, kept):
            if os.path.isdir(real) and not os.path.islink(real):
                shutil.rmtree(real)
            else:
                os.unlink(real)

        @staticmethod
        def undo_remove(real, kept):
            PowerCut.put_back(real, kept)

        @staticmethod
        def undo_rename(old, new, kept):
            os.rename(new, old)
            PowerCut.put_back(new, kept)

        # ---- the power
        def cut(self):
            with self.mutex:
                if self.dead:
                    return 'cut: the power was already off'
                self.dead = True
                kept = lost = 0
                for node in self.inodes.values():
                    if node.dirty:
                        node.restore()
                        kept, lost = kept + node.kept, lost + node.lost
                survive = 0
                if self.keep > 0:
                    rng = random.Random(f'{self.seed}:entries')
                    while survive < len(self.journal) and rng.random() < self.keep:
                        survive += 1
                undone = self.journal[survive:]
                for undo, args, aside in reversed(undone):
                    undo(*args, aside)
                self.close_all()
                return f'cut: {kept} volatile sectors kept, {lost} lost; {len(undone)} entry changes undone'

        def close_all(self):
            for node in self.inodes.values():
                os.close(node.fd)
            self.inodes.clear()
            self.handles.clear()
            self.journal.clear()
            shutil.rmtree(self.aside_dir, ignore_errors=True)

        def destroy(self, path):
            with self.mutex:            # a clean unmount: the backing files already hold everything
                if not self.dead:
                    self.dead = True
                    self.close_all()

        # ---- reading
        def getattr(self, path, fh=None):
            with self.mutex:
                self.check()
                node = self.handles.get(fh) if fh else None
                st = os.fstat(node.fd) if node is not None else os.lstat(self.real(path))
                return {'st_mode': st.st_mode, 'st_nlink': st.st_nlink, 'st_uid': st.st_uid,
                        'st_gid': st.st_gid, 'st_size': st.st_size, 'st_blocks': st.st_blocks,
                        'st_atime': st.st_atime_ns, 'st_mtime': st.st_mtime_ns, 'st_ctime': st.st_ctime_ns}

        def read(self, path, size, offset, fh):
            with self.mutex:
                self.check()
                return os.pread(self.node(path, fh).fd, size, offset)

        def readdir(self, path, fh):
            with self.mutex:
                self.check()
                names = os.listdir(self.real(path))
            if path == '/':
                names = [n for n in names if n != UNDO_DIR]
            return ['.', '..'] + names

        def readlink(self, path):
            with self.mutex:
                self.check()
                return os.readlink(self.real(path))

        def statfs(self, path):
            st = os.statvfs(self.root)
            return {k: getattr(st, k) for k in ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail',
                                                'f_ffree', 'f_files', 'f_flag', 'f_frsize', 'f_namemax')}

        # ---- file data
        def open(self, path, flags):
            with self.mutex:
                self.check()
                return self.handle(self.open_inode(path))

        def create(self, path, mode, fi=None):
            with self.mutex:
                self.check()
                real = self.real(path)
                try:
                    fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                except FileExistsError:
                    return self.handle(self.open_inode(path))
                self.entry_change(self.undo_create, real)
                return self.handle(self.adopt(fd))

        def release(self, path, fh):
            with self.mutex:
                node = self.handles.pop(fh, None)
                if node is not None:
                    node.refs -= 1
                    if not self.dead:
                        self.let_go(node)
                return 0

        def flush(self, path, fh):
            return 0

        def write(self, path, data, offset, fh):
            with self.mutex:
                self.check()
                return self.node(path, fh).write(data, offset, self.early(path))

        def truncate(self, path, length, fh=None):
            with self.mutex:
                self.check()
                node = self.node(path, fh)
                node.truncate(length, self.early(path))

        def fsync(self, path, datasync, fh):
            with self.mutex:               # fsync and fdatasync alike: the data and the size are durable
                self.check()
                node = self.node(path, fh)
                node.durable()
                self.let_go(node)
                return 0

        def fsyncdir(self, path, datasync, fh):
            with self.mutex:               # every entry change so far is durable, in any directory
                self.check()
                for _, _, aside in self.journal:
                    self.drop_aside(aside)
                self.journal.clear()
                return 0

        # ---- directory entries
        def mknod(self, path, mode, dev):
            with self.mutex:
                self.check()
                real = self.real(path)
                os.mknod(real, mode, dev)
                self.entry_change(self.undo_create, real)

        def mkdir(self, path, mode):
            with self.mutex:
                self.check()
                real = self.real(path)
                os.mkdir(real, mode)
                self.entry_change(self.undo_create, real)

        def symlink(self, target, source):
            with self.mutex:                # fusepy: target is the new name, source what it points to
                self.check()
                real = self.real(target)
                os.symlink(source, real)
                self.entry_change(self.undo_create, real)

        def link(self, target, source):
            with self.mutex:                # fusepy: target is the new name
                self.check()
                real = self.real(target)
                os.link(self.real(source), real, follow_symlinks=False)
                self.entry_change(self.undo_create, real)

        def remove(self, path, rm):
            with self.mutex:
                self.check()
                real = self.real(path)
                kept = self.aside(real)
                try:
                    rm(real)
                except OSError:
                    self.drop_aside(kept)
                    raise
                self.entry_change(self.undo_remove, real, kept=kept)

        def unlink(self, path):
            self.remove(path, os.unlink)

        def rmdir(self, path):
            self.remove(path, os.rmdir)

        def rename(self, old, new):
            with self.mutex:
                self.check()
                real_old, real_new = self.real(old), self.real(new)
                try:
                    if os.path.samestat(os.lstat(real_old), os.lstat(real_new)):
                        return              # two names of one file: rename does nothing
                except FileNotFoundError:
                    pass
                kept = self.aside(real_new)
                try:
                    os.rename(real_old, real_new)
                except OSError:
                    self.drop_aside(kept)
                    raise
                self.entry_change(self.undo_rename, real_old, real_new, kept=kept)

        # ---- metadata: passed through, outside the model
        def chmod(self, path, mode):
            with self.mutex:
                self.check()
                os.chmod(self.real(path), mode)

        def chown(self, path, uid, gid):
            with self.mutex:
                self.check()
                os.chown(self.real(path), uid, gid, follow_symlinks=False)

        def utimens(self, path, times=None):
            with self.mutex:
                self.check()
                if times is None:
                    os.utime(self.real(path))
                else:
                    os.utime(self.real(path), ns=times)

    return PowerCut


def mount(backing, mnt, keep, seed):
    try:
        import fusepy
    except ImportError as e:
        sys.exit(f'powercut: cannot import fusepy ({e}); on Debian: apt-get install fuse3 python3-fusepy, '
                 f'and run /usr/bin/python3')
    backing = os.path.abspath(backing)
    os.umask(0)
    fs = make_filesystem(fusepy)(backing, keep, seed)

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(control_address(mnt))
    server.listen(4)

    def control():
        while True:
            conn, _ = server.accept()
            with conn:
                if conn.recv(64).strip() != b'cut':
                    continue
                try:
                    report = fs.cut()
                except Exception as e:  # the disk is in an unknown state: say so, loudly
                    traceback.print_exc()
                    report = f'powercut: the cut failed: {e!r}'
                conn.sendall(report.encode() + b'\n')

    threading.Thread(target=control, daemon=True).start()
    # One FUSE thread: every operation takes the filesystem lock anyway. hard_remove: removing an open
    # file is an unlink, not a rename to .fuse_hidden*. big_writes: writes arrive up to 128 KiB at once.
    fusepy.FUSE(fs, mnt, foreground=True, nothreads=True, hard_remove=True, big_writes=True,
                max_write=131072, fsname='powercut', subtype='powercut')
    return 0


def cut(mnt):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(control_address(mnt))
        except OSError as e:
            print(f'powercut: no powercut daemon serves {mnt} ({e.strerror})', file=sys.stderr)
            return 1
        s.sendall(b'cut\n')
        report = b''
        while not report.endswith(b'\n'):
            chunk = s.recv(4096)
            if not chunk:
                break
            report += chunk
    report = report.decode().strip()
    print(report)
    # The unmount ends the daemon's FUSE loop, and with it the daemon. A just-killed program may still
    # be letting go of its files: retry, then detach lazily.
    for _ in range(40):
        r = subprocess.run(['fusermount3', '-u', mnt], capture_output=True, text=True)
        if r.returncode == 0:
            break
        time.sleep(0.05)
    else:
        print(f'powercut: {r.stderr.strip()}; unmounting lazily', file=sys.stderr)
        subprocess.run(['fusermount3', '-u', '-z', mnt], check=True)
    for _ in range(200):
        if not os.path.ismount(mnt):
            return 0 if report.startswith('cut: ') else 1
        time.sleep(0.05)
    print(f'powercut: {mnt} is still mounted', file=sys.stderr)
    return 1


def main(argv):
    parser = argparse.ArgumentParser(prog='powercut.py', description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    m = sub.add_parser('mount', help='serve BACKING at MOUNTPOINT in the foreground until unmounted')
    m.add_argument('backing')
    m.add_argument('mountpoint')
    m.add_argument('--keep', type=float, default=0.0,
                   help='probability that a volatile sector or entry change reached the disk (default 0)')
    m.add_argument('--seed', type=int, default=1, help='seed of every random draw (default 1)')
    c = sub.add_parser('cut', help='cut the power of the filesystem at MOUNTPOINT, then unmount it')
    c.add_argument('mountpoint')
    a = parser.parse_args(argv)
    if a.command == 'cut':
        return cut(a.mountpoint)
    if not 0 <= a.keep <= 1:
        parser.error('--keep must be between 0 and 1')
    return mount(a.backing, a.mountpoint, a.keep, a.seed)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
