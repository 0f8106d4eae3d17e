"""Interest and dispatch: the part of a ``Loop`` that knows what each fd waits for, and the
one path that routes readiness events to channels.

The interest table (``_objs``/``_masks``/``_asked``) holds one registration per fd and changes
the poller's only when a channel's answer changes (see reactor.py's docstring for the rules).
``_dispatch(events)`` is the one dispatch path of every driver: the pollers' driver
(driver.py) hands it what ``poll()`` returned, netloop.aio's asyncio driver each readiness
callback. The poller it registers with is whatever the loop was given, so a driver that is not
a kernel poller (asyncio's ``add_reader``/``add_writer``) reuses this table unchanged.
"""

from __future__ import annotations

import os
import socket as _socket
from _thread import get_ident as _get_ident
from errno import EBADF

from .errors import DISCONNECTED, RERAISED
from .pollers import (CLOSED_MASK, ERROR, HANGUP, INVALID, PRIORITY, READ, READ_MASK, WRITE,
                      FDSetSizeError)
from .services import Services, logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

    from .pollers import Poller
    from .reactor import ChannelMap

#: Reasons a channel does not read (bits of ``channel._nl_paused``; it reads when none holds):
#: ``Loop.pause_reading()``; its output queue over the high watermark; end of input seen;
#: a listener resting after accept() failed or a connection limit was reached.
PAUSED_BY_USER = 1
PAUSED_BY_QUEUE = 2
PAUSED_AT_EOF = 4
PAUSED_RESTING = 8

# What epoll reports for a connection the peer reset (or closed while unread data was lost).
_RESET = READ | ERROR | HANGUP

# True once a channel class has set _nl_close_on_reset (Dispatcher.__init_subclass__): until
# then the reset path reads no class attribute for it.
_ANY_CLOSE_ON_RESET = False


def _allow_close_on_reset() -> None:
    global _ANY_CLOSE_ON_RESET
    _ANY_CLOSE_ON_RESET = True


class Interest(Services):
    """Per-fd interest and event dispatch (a part of ``Loop``)."""

    if TYPE_CHECKING:
        # The loop's state, made by Loop.__init__ (reactor.py), and what the parts above
        # this one provide.
        map: ChannelMap
        _map_get: Callable[[Any], Any]
        _objs: Dict[int, Any]
        _masks: Dict[int, int]
        _asked: Dict[int, Any]
        _indirect: Set[int]
        _closed_fds: Set[int]
        _bad: List[int]
        _dispatching: bool
        _accepted: Optional[Tuple[Any, Any]]
        _accepted_by: Any
        _scan_asked: bool
        _slow: bool
        _pass_work: bool
        _acquired: bool
        _running: int
        _poller: Optional[Poller]
        _wake_fd: int
        _tick_fd: int
        _tick_period: Optional[float]
        _waker: Any
        @property
        def _reserve(self) -> int: ...
        _kernel_register: Callable[[int, int], None]
        _kernel_unregister: Callable[[int], None]
        _hup_closes: bool
        _alias: Dict[int, Any]
        _to_ask: Set[int]
        _fd_refusals: int
        _stopping: bool
        _contain: bool
        _thread_id: Optional[int]

        def _maybe_release(self) -> None: ...
        def _on_tick(self) -> None: ...
        def _arm_tick(self) -> bool: ...
        def _close_tick(self, unregister: bool = True) -> None: ...
        def _poll_failed(self, err: OSError) -> List[Tuple[int, int]]: ...
        def _with_bad(self, events: Any) -> List[Tuple[int, int]]: ...

    def _recompute_slow(self) -> None:
        self._slow = (not self._acquired or (bool(self._asked) and self._scan_asked)
                      or bool(self._to_ask) or bool(self._bad) or self._stopping
                      or self._waker is None)

    def _add(self, key: Any, obj: Any) -> None:
        """Register the channel the map holds under ``key``. Never calls its predicates."""
        old = self._objs.get(key)
        if old is not None:
            if old is obj:
                return
            if type(key) is int:
                # The kernel can tell a reused number from a descriptor still open (shared by
                # two socket objects, or handed to an ssl.SSLSocket): ask it before forgetting.
                same = self._holds(key)
                self._discard(key)
                if not same:
                    self._retire_stale(key, old, obj)
            else:
                self._discard(key)
        self._objs[key] = obj
        if type(key) is int:
            fd = key
            try:
                obj._nl_loop = self
                obj._nl_direct = False
            except AttributeError:
                pass
        else:
            # A socket object as the key (select() took anything with fileno()), or None (a
            # dispatcher with no socket: held, never watched). Such a map is usually made for
            # one call; the channel's own loop, if it has one, keeps hearing from it.
            found = _key_fd(key)
            if found is None or found in self._objs:
                return
            fd = found
            self._alias[fd] = key
            if getattr(obj, "_nl_loop", None) is None:
                try:
                    obj._nl_loop = self
                except AttributeError:
                    pass
            try:
                obj._nl_direct = False
            except AttributeError:
                pass
        cls = type(obj)
        try:
            # (read from the class, not with getattr(): a call costs ~400 instructions)
            plain_read, known = cls._nl_registration
        except AttributeError:  # not a Dispatcher: an object of its own in a legacy map
            plain_read = getattr(cls, "_nl_plain_read", False)
            known = getattr(cls, "_nl_known", False)
        if plain_read:
            if self._indirect:
                self._indirect.discard(fd)
        else:
            self._indirect.add(fd)
        if known:
            mask = obj._nl_mask()
            masks = self._masks
            if mask and fd not in masks:
                # A new descriptor, the usual case: _set_mask's work in line, through the
                # poller's C call where it has one; anything unusual goes through _set_mask.
                try:
                    self._kernel_register(fd, mask)
                except FDSetSizeError as err:
                    self._refuse_fd(fd, err)
                except (OSError, ValueError):
                    self._set_mask(fd, mask)
                else:
                    masks[fd] = mask
            else:
                self._set_mask(fd, mask)
            if self._fd_refusals and fd in self._masks:
                # A new channel is watched: select()'s refusals (see _refuse_fd) are over.
                # (A channel that is asked registers at the next pass, among re-asked ones:
                # the next new channel of a known class ends the episode instead.)
                self._end_fd_refusals(fd)
        else:
            # Asked at the start of the next pass, as asyncore asked, never here: the channel
            # may be registering from inside its subclass's __init__, before that has set
            # the state its readable()/writable() read.
            self._asked[fd] = obj
            self._to_ask.add(fd)
            self._slow = True

    def _holds(self, fd: int) -> bool:
        """True when the kernel still holds the registration made for the file now numbered
        ``fd``: that file was never closed (epoll drops a closed file's registration, so a
        number reused since answers False). False also where the poller cannot tell."""
        mask = self._masks.get(fd)
        poller = self._poller
        if not mask or poller is None:
            return False
        holds = getattr(poller, "holds", None)
        return holds is not None and bool(holds(fd, mask))

    def _retire_stale(self, fd: int, old: Any, new: Any) -> None:
        """``new`` registers under ``fd`` while ``old`` still holds it: ``old``'s descriptor was
        closed behind its back and the number reused (by accept(), say). Retire ``old``
        without touching the descriptor, which is ``new``'s now.

        Not when nothing says a descriptor was lost: ``old``'s socket is a stand-in (a test's
        fake socket, which has no descriptor to lose), or the kernel showed the file still
        open (``_holds``). Then ``new`` simply takes the number, as in asyncore."""
        sock = getattr(old, "socket", None)
        if sock is None or sock is getattr(new, "socket", None):
            return  # a foreign object replaced by hand, or a socket handed over: not stale
        if not isinstance(sock, _socket.socket) and not getattr(type(sock), "_nl_owns_fd", False):
            return  # a stand-in for a socket: no descriptor of its own was lost
        claimed = _claimed_fd(sock)
        if claimed not in (fd, -1):
            return
        logger.warning("netloop: fd %d was closed behind the back of its %s channel and now "
                       "belongs to a new %s; retiring the old channel",
                       fd, type(old).__name__, type(new).__name__)
        # Detached, not closed: closing it (or its garbage collection) would close the new
        # connection's descriptor.
        _detach(sock)
        self._retire(old)

    def _retire(self, obj: Any) -> None:
        """Forget ``obj``'s descriptor number and have ``handle_close()`` called at the next
        pass (``_close_retired``)."""
        try:
            obj._fileno = None
        except AttributeError:
            pass
        self._ready.append((_close_retired, (obj,)))
        self._slow = True
        self._pass_work = True

    def _discard(self, key: Any) -> None:
        obj = self._objs.pop(key, None)
        fd: int
        if type(key) is int:
            fd = key
            if obj is None and fd in self._alias:  # a socket-keyed entry, named by its fd
                key = self._alias.pop(fd)
                obj = self._objs.pop(key, None)
        else:
            found: Optional[int] = None
            for afd, akey in self._alias.items():
                if akey is key:
                    found = afd
                    break
            if found is None:  # None, or a key never watched
                if obj is not None and getattr(obj, "_nl_loop", None) is self:
                    obj._nl_loop = None
                return
            fd = found
            del self._alias[fd]
        if self._asked and self._asked.pop(fd, None) is not None and not self._asked:
            self._recompute_slow()
        if self._to_ask:
            self._to_ask.discard(fd)
        if self._indirect:
            self._indirect.discard(fd)
        if self._masks.pop(fd, 0) and self._poller is not None:
            try:
                self._kernel_unregister(fd)
            except (OSError, ValueError):
                self._poller.unregister(fd)  # a regular file, or an fd closed already
        if self._dispatching:
            self._closed_fds.add(fd)
            self._pass_work = True
        if obj is not None:
            try:
                obj._nl_direct = False  # (see _dispatch: not under a number closed this pass)
            except AttributeError:
                pass
            try:
                if obj._nl_loop is self:
                    obj._nl_loop = None
            except AttributeError:
                pass
        if not self.map:
            if not self._running:
                self._maybe_release()
            elif self._thread_id is not None and self._thread_id != _get_ident():
                # Emptied from another thread while the loop waits in its poll: wake it, so
                # that a run only channels keep going (asyncore's loop()) returns now, not
                # after its timeout (ZEO's StorageServer.close() joins its loop's thread).
                # (The pass the wake-up ends looks at the map: _on_wake.)
                self._wake()

    def _update(self, obj: Any) -> None:  # obj: a registered channel
        """A channel's interest may have changed: re-register it if it did.

        A channel whose predicates are its own is not asked here (this runs inside connect(),
        listen() and the like, maybe before its __init__ is done) but at the start of the
        next pass.
        """
        fd = obj._fileno
        obj._nl_direct = False  # connected/accepting are read again at its next read event
        if self._objs.get(fd) is not obj:
            key = self._alias.get(fd) if fd is not None else None
            if key is None or self._objs.get(key) is not obj:
                return
        if fd in self._asked:
            self._to_ask.add(fd)
            self._slow = True
        else:
            self._set_mask(fd, obj._nl_mask())  # type: ignore[union-attr]  # mypy narrows Any

    def _reask(self, fd: int, obj: Any) -> None:
        """Ask a channel's predicates now (after its own events) and re-register on change."""
        key = self._alias.get(fd, fd) if self._alias else fd
        if self._objs.get(key) is obj:
            mask = self._ask(obj, self._masks.get(fd, 0))
            if self._objs.get(key) is obj:
                self._set_mask(fd, mask)

    def _ask_pending(self) -> None:
        """Ask the channels registered (or changed) since the last pass."""
        fds = list(self._to_ask)
        self._to_ask.clear()
        asked = self._asked
        for fd in fds:
            obj = asked.get(fd)
            if obj is not None:
                self._reask(fd, obj)

    def _ask(self, obj: Any, current: int) -> int:
        try:
            # A read pause holds back application data, not the reads TLS makes for its own
            # handshake, renegotiation or key update (_nl_own_reads, set while one runs): a
            # pause, or a queue filled before the handshake ended, would stall it otherwise.
            mask = READ_MASK if obj.readable() and (not getattr(obj, "_nl_paused", 0) or getattr(
                obj, "_nl_own_reads", False)) else 0
            if obj.writable() and not getattr(obj, "accepting", False):
                mask |= WRITE
        except RERAISED:
            raise
        except BaseException as err:
            _route_failure(obj, err, self)
            return current
        return mask

    def _set_mask(self, fd: int, mask: int) -> None:
        masks = self._masks
        old = masks.get(fd, 0)
        if mask == old:
            return
        poller = self._poller
        assert poller is not None
        try:
            if not old:
                poller.register(fd, mask)
            elif not mask:
                poller.unregister(fd)
            else:
                poller.modify(fd, mask)
        except FDSetSizeError as err:
            self._refuse_fd(fd, err)
            return
        except (OSError, ValueError) as err:
            # A descriptor closed behind the channel's back (poll would say POLLNVAL), or one
            # the poller cannot watch (select's FD_SETSIZE: ValueError).
            if getattr(err, "errno", None) != EBADF:  # else logged as closed, by _lost()
                logger.warning("netloop: cannot watch fd %d (%s); closing its channel", fd, err)
            masks.pop(fd, None)
            self._bad.append(fd)
            self._slow = True
            return
        if mask:
            masks[fd] = mask
        else:
            del masks[fd]

    def _refuse_fd(self, fd: int, err: FDSetSizeError) -> None:
        # Past FD_SETSIZE every new connection is refused until lower descriptors are free
        # again: a server under load would log one line per connection, so log the first
        # refusal of an episode and count the rest. The channel is closed all the same.
        if not self._fd_refusals:
            logger.warning("netloop: cannot watch fd %d (%s); closing channels whose "
                           "descriptors select() cannot watch until it can watch new ones "
                           "again", fd, err)
        self._fd_refusals += 1
        self._masks.pop(fd, None)
        self._bad.append(fd)
        self._slow = True

    def _end_fd_refusals(self, fd: int) -> None:
        logger.warning("netloop: select() watches new descriptors again (fd %d); %d channel(s) "
                       "closed because their descriptors were too large", fd, self._fd_refusals)
        self._fd_refusals = 0

    def _reconcile(self) -> None:
        map = self.map
        objs = self._objs
        for key in [key for key, obj in objs.items() if map.get(key) is not obj]:
            self._discard(key)
        own = None
        for key, obj in list(map.items()):
            if objs.get(key) is not obj:
                if type(key) is int:
                    if own is None:
                        own = self._own_fds()
                    if key in own:
                        self._lost_to_loop(key, obj)
                        continue
                self._add(key, obj)

    def _own_fds(self) -> Set[int]:
        """The descriptors the loop holds itself: poller, wake-up pipe, reserve, run timer."""
        own = {self._wake_fd, self._reserve, self._tick_fd}
        waker = self._waker
        while waker is not None:
            own.update((waker.rfd, waker.wfd))
            waker = waker.replaced
        poller = self._poller
        if poller is not None:
            try:
                own.add(poller.fileno())
            except (AttributeError, OSError, ValueError):
                pass
        own.discard(-1)
        return own

    def _lost_to_loop(self, fd: int, obj: Any) -> None:
        """A channel in the map under one of the loop's own numbers: its descriptor was closed
        before the loop took its kernel objects, which got the number. Never watched (its
        events would be the loop's own); taken out of the map and closed, as poll()'s
        POLLNVAL would have had it."""
        logger.warning("netloop: fd %d of a %s channel was closed behind its back before the "
                       "loop started, and the number is the loop's own now; closing the "
                       "channel", fd, type(obj).__name__)
        if self.map.get(fd) is obj:
            del self.map[fd]
        sock = getattr(obj, "socket", None)
        if sock is not None and _claimed_fd(sock) == fd:
            _detach(sock)  # its close (or garbage collection) would close the loop's
        self._retire(obj)

    def _scan(self) -> None:
        # Every pass for legacy code (asked channels, scan=True): keep the loop body lean.
        objs = self._objs
        masks = self._masks
        if self._to_ask:
            self._to_ask.clear()
        if self._alias:
            for fd, obj in list(self._asked.items()):
                self._reask(fd, obj)
            return
        for fd, obj in list(self._asked.items()):
            if objs.get(fd) is obj:
                current = masks.get(fd, 0)
                mask = self._ask(obj, current)
                if mask != current and objs.get(fd) is obj:
                    self._set_mask(fd, mask)

    def pause_reading(self, channel: Any, delay: Optional[float] = None) -> None:
        """Stop reading from ``channel`` (for ``delay`` seconds, or until ``resume_reading``).

        Only read interest is taken away: a channel with queued output goes on writing it, so
        pausing a channel never stops its queue from draining. This pause is the user's own
        reason; reading paused by a full output queue (see ``BufferedDispatcher``'s
        watermarks) or at end of input is counted apart, and the channel reads again only when
        no reason holds.
        """
        _set_paused(channel, PAUSED_BY_USER, True, self)
        if delay is not None:
            self.call_later(delay, self.resume_reading, channel)

    def resume_reading(self, channel: Any) -> None:
        """End a ``pause_reading()``: the channel reads again unless another reason holds."""
        _set_paused(channel, PAUSED_BY_USER, False, self)

    def _read_unmarked(self, fd: int, obj: Any) -> None:
        """A read event for a map's object that refuses ``_nl_direct`` (``_add`` could not set
        it): ``handle_read_event()``, unless the number was closed during this pass."""
        if fd in self._closed_fds:
            return
        try:
            obj.handle_read_event()
        except RERAISED:
            raise
        except BaseException as err:
            _route_failure(obj, err, self)

    def _dispatch(self, events: Any, poll: Any = None, timeout: Optional[float] = None) -> None:
        """Route readiness events ``[(fd, flags), ...]`` to the channels of the map.

        The one dispatch path of every driver: ``_pass`` calls it with what the poller
        returned, and a loop hosted by asyncio (``netloop.aio``) with each readiness callback.

        Given ``poll`` (a run that only ``stop()`` or an empty map ends), it goes on: polls
        again (at most ``timeout``) and dispatches, for as long as the next pass would need
        nothing else: no set-up (``_slow``, a map edited behind the loop's back), no due
        timers or queued calls. Then it returns to ``_pass``, which runs those. A pass in
        this loop makes no Python call but the handler's: about 2,000 instructions fewer per
        pass than a _pass() call each (bench_insn_servers.py pp1).
        """
        get = self._map_get
        closed = self._closed_fds
        indirect = self._indirect
        read = READ  # (a local: one instruction fewer per event than the global)
        if poll is not None:
            map = self.map
            objs = self._objs
            ready = self._ready
            timers = self._timers
        # A legacy loop() run from a handler dispatches inside this call. Its passes poll
        # afresh: a number the outer pass closed is a new channel's here, so they start with
        # a guard of their own, and what each of them closed goes into the outer pass's guard
        # at its end. When the run ends, the outer pass gets its guard back, and the channels
        # now under the numbers it holds lose the direct flag these passes may have set.
        was_dispatching = self._dispatching
        outer_closed: Optional[Set[int]] = None
        if was_dispatching:
            outer_closed = closed
            closed = self._closed_fds = set()
        self._dispatching = True
        try:
            while True:
                for fd, flags in events:
                    obj = get(fd)
                    if obj is None:
                        if fd == self._wake_fd:
                            self._on_wake()
                            continue
                        if fd == self._tick_fd:
                            self._on_tick()
                            continue
                        obj = self._aliased(fd)
                        if obj is None:
                            if fd in self._masks:
                                # Removed from the map behind our back: stop watching it.
                                self._discard(fd)
                            continue
                    # A number closed during this pass (``closed``) may be a new channel's
                    # already; its events in this pass were the old one's: skipped. The usual
                    # read event tests one flag first: _nl_direct is this loop only when set
                    # below, after those tests, by this loop (a channel may be in two maps),
                    # and it is cleared when the channel registers or leaves the map and
                    # after a nested run (see above), so a channel that has it is neither
                    # indirect nor under a closed number. (Testing ``closed`` and ``indirect``
                    # first cost 300 instructions per request on 3.13: a set's truth and a
                    # set lookup are not specialized.)
                    if flags == read:
                        try:
                            if obj._nl_direct is self:
                                obj.handle_read()
                            elif closed and fd in closed:
                                pass
                            elif fd in indirect:
                                obj.handle_read_event()
                            elif obj.connected and not obj.accepting:
                                # handle_read_event() would call handle_read(): do it here, and
                                # at its next reads until its interest changes (_nl_direct).
                                obj._nl_direct = self
                                obj.handle_read()
                            else:
                                obj.handle_read_event()
                        except RERAISED:
                            raise
                        except BaseException as err:
                            if type(err) is AttributeError and not hasattr(obj, "_nl_direct"):
                                # An object of its own that takes no attribute (slots): read
                                # as any indirect channel.
                                self._read_unmarked(fd, obj)
                            else:
                                _route_failure(obj, err, self)
                    elif closed and fd in closed:
                        continue
                    elif flags == _RESET and not self._alias:
                        # A reset peer (epoll reports in|err|hup): the read finds it out and closes
                        # the channel, as _dispatch_flags would have, two calls and a few flag
                        # tests fewer per connection. A channel its read left open gets the rest:
                        # the hang-up (poll()-style dispatch), or with select()-style dispatch
                        # (asyncore's loop(), where a hang-up is only readable and writable) the
                        # write event if it watches for one. (The READ block's routing again, on
                        # purpose: one block for both cost the READ path 115-155 instructions per
                        # request, bench_insn.py pp-cli.)
                        try:
                            if fd not in indirect and (obj._nl_direct or obj.connected
                                                       and not obj.accepting):
                                if _ANY_CLOSE_ON_RESET and obj._nl_close_on_reset:
                                    # A class that reads nothing a reset peer sent (the
                                    # CLI's echo): no read, whose failure costs a Python
                                    # exception (~8,000 instructions per connection on
                                    # 3.11, bench_insn_servers.py connrate).
                                    obj.handle_close()
                                else:
                                    obj.handle_read()
                            else:
                                obj.handle_read_event()
                        except RERAISED:
                            raise
                        except BaseException as err:
                            _route_failure(obj, err, self)
                        else:
                            if get(fd) is obj and fd not in closed:
                                if self._hup_closes:
                                    self._dispatch_flags(fd, obj, flags & ~READ)
                                elif self._masks.get(fd, 0) & WRITE:
                                    self._dispatch_flags(fd, obj, WRITE)
                            elif self._hup_closes and not self._contain:
                                # asyncore's poll loop (readwrite()) went on to the hang-up's
                                # handle_close() after a read that closed the channel. (Flags
                                # in line: a method call cost 600 instructions per connection,
                                # bench_insn_servers.py connrate on 3.11.)
                                self._dispatch_flags(fd, obj, flags & ~READ)
                    else:
                        self._dispatch_flags(fd, obj, flags)
                # The pass's end, after each pass of this loop as after a single one. In the
                # usual pass of a run (poll given) nothing happened but reads and writes:
                # three flag tests and two lengths say so (a map edited behind the loop's
                # back changes its length), and it polls again: 350-650 instructions per pass
                # fewer than testing each thing below (bench_insn_servers.py pp1, 3.11-3.13).
                if self._pass_work or self._slow or poll is None or len(map) != len(objs):
                    if not self._scan_asked and self._asked:  # (flag first: scan is the default)
                        self._reask_events(events)
                    if closed:
                        if outer_closed is not None:
                            outer_closed |= closed
                        closed.clear()
                    if self._accepted is not None or self._accepted_by is not None:
                        self._accepted = None
                        self._accepted_by = None
                    if poll is None:
                        break
                    # Cleared only here (set again by whatever makes work for a pass: see
                    # Loop._pass_work). Queued calls and live timers end this loop below, and
                    # the pass that runs them sets it again in _prepare(). With scan off,
                    # asked channels are asked again after every pass's events.
                    self._pass_work = not self._scan_asked
                    if self._slow or ready or timers._live or not map or len(map) != len(objs):
                        break
                try:
                    events = poll(timeout)
                except OSError as err:
                    events = self._poll_failed(err)
                if self._slow and self._bad:
                    events = self._with_bad(events)
        except BaseException:
            # What escapes (an exception the loop re-raises) leaves no pass state behind. (A
            # nested run's guard goes to the outer pass's, below.)
            if outer_closed is None:
                closed.clear()
            self._accepted = None
            self._accepted_by = None
            self._pass_work = True
            raise
        finally:
            self._dispatching = was_dispatching
            if outer_closed is not None:
                outer_closed |= closed
                self._closed_fds = outer_closed
                for fd in outer_closed:
                    obj = get(fd)
                    if obj is not None:
                        try:
                            obj._nl_direct = False
                        except AttributeError:
                            pass

    def _reask_events(self, events: Any) -> None:
        # Asked channels (legacy predicates, not scanned every pass) that had an event: ask
        # them again, as their answers may have changed.
        asked = self._asked
        for fd, _ in events:
            obj = asked.get(fd)
            if obj is not None:
                self._reask(fd, obj)

    def _aliased(self, fd: int) -> Any:
        """The channel a map keyed by socket objects holds for ``fd``, else None."""
        key = self._alias.get(fd)
        if key is None:
            return None
        obj = self.map.get(key)
        if obj is None or self._objs.get(key) is not obj:
            return None
        return obj

    def _lost(self, fd: int, obj: Any) -> None:
        """The poller says ``fd`` is not open (POLLNVAL, EBADF): it was closed behind the
        channel's back. Log it, and detach the channel's socket object so that closing the
        channel cannot close whatever file takes that number next."""
        try:
            os.fstat(fd)
        except OSError:
            pass
        else:
            return  # open, but refused by the poller (select's FD_SETSIZE): logged then
        logger.warning("netloop: fd %d was closed behind its channel's back (%s); closing "
                       "the channel", fd, type(obj).__name__)
        sock = getattr(obj, "socket", None)
        if sock is not None:
            _detach(sock)

    def _dispatch_flags(self, fd: int, obj: Any, flags: int) -> None:
        get: Callable[[Any], Any] = self.map.get
        closed = self._closed_fds
        if self._alias and fd in self._alias:
            key = self._alias[fd]
            get = lambda _fd: self.map.get(key)  # noqa: E731
        # asyncore's poll loop (use_poll=True: poll2() and readwrite()) gave one event's flags
        # to the channel in turn even when a handler had closed it: a hang-up that came with
        # the input whose read closed the channel still called handle_close(), a second time.
        # Its select loop, and netloop's own, stop at a channel closed (taken out of the map).
        go_on = self._hup_closes and not self._contain
        try:
            if flags & INVALID:
                self._lost(fd, obj)
            if flags & (ERROR | HANGUP) and not self._hup_closes:
                # select() semantics: a hung-up socket is simply readable and writable.
                flags = (flags | (self._masks.get(fd, 0) & (READ | WRITE))) & ~(ERROR | HANGUP)
            if flags & READ:
                obj.handle_read_event()
                if not go_on and (get(fd) is not obj or fd in closed):
                    return
            if flags & WRITE:
                obj.handle_write_event()
                if not go_on and (get(fd) is not obj or fd in closed):
                    return
            if flags & PRIORITY:
                obj.handle_expt_event()
                if not go_on and (get(fd) is not obj or fd in closed):
                    return
            if flags & CLOSED_MASK:
                obj.handle_close()
        except RERAISED:
            raise
        except BaseException as err:
            _route_failure(obj, err, self)


def _key_fd(key: Any) -> Optional[int]:
    """The descriptor of a map key that is not an int (a socket object), None if none."""
    if key is None:
        return None
    try:
        fd = key.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if type(fd) is int and fd >= 0 else None


def _claimed_fd(sock: Any) -> int:
    """The descriptor a socket object says it holds; -1 when closed, detached or unknown."""
    try:
        return int(sock.fileno())
    except Exception:
        return -1


def _detach(sock: Any) -> None:
    """Make a socket object forget its descriptor without closing it."""
    detach = getattr(sock, "detach", None)
    if detach is not None:
        try:
            detach()
        except (OSError, ValueError):
            pass


def _close_retired(obj: Any) -> None:
    """Tell a channel retired by the loop (its descriptor was lost) that it is closed."""
    try:
        obj.handle_close()
    except RERAISED:
        raise
    except BaseException:
        logger.error("netloop: exception closing retired channel %s", type(obj).__name__,
                     exc_info=True)
        try:
            obj.close()
        except Exception:
            pass


def _set_paused(channel: Any, reason: int, on: bool, lp: Optional[Interest] = None) -> None:
    """Set or clear one reason of ``channel``'s read pause; tell its loop if that changes
    whether it reads at all."""
    old = getattr(channel, "_nl_paused", 0) or 0
    new = (old | reason) if on else (old & ~reason)
    if new == old:
        return
    channel._nl_paused = new
    if bool(new) is not bool(old):
        if lp is None:
            lp = getattr(channel, "_nl_loop", None)
        if lp is not None and lp._acquired and getattr(channel, "_fileno", None) is not None:
            lp._update(channel)
        if not new:
            # A TLS socket may hold decrypted input that no readiness event will announce.
            resumed = getattr(getattr(channel, "socket", None), "_nl_resumed", None)
            if resumed is not None:
                resumed()


def _route_failure(obj: Any, err: BaseException, lp: Optional[Interest] = None) -> None:
    """asyncore's rule for an exception out of a handler (called inside the ``except`` block,
    so ``handle_error()`` still sees it): a disconnect closes the channel quietly, anything
    else goes to ``handle_error()``.

    A listener never "disconnects": on the core loop, an ENOTCONN or ECONNRESET out of its
    handler concerns a client being set up (say ``getpeername()`` of one that reset before it
    was served), so it is logged and the listener goes on (asyncore closed the listener, with
    no log line). The default ``handle_accept()`` keeps such failures from the listener anyway.

    If ``handle_close()`` or ``handle_error()`` raises in turn, the loop (unless it runs for
    the asyncore drop-ins, which let it out) logs it with its traceback and closes and removes
    the channel itself (``_abandon``): one channel's bug never ends the loop.
    """
    if lp is None:
        lp = getattr(obj, "_nl_loop", None)
    try:
        # asyncore had that rule in readwrite() only, its poll loop's (use_poll=True, poll2()):
        # its select loop's read()/write()/_exception() gave every exception to handle_error(),
        # a disconnect too (which the default logs with its traceback before it closes). The
        # drop-in loop()/poll() with select()-style dispatch (neither contained nor closing on
        # hang-ups) keep that.
        if isinstance(err, OSError) and err.errno in DISCONNECTED \
                and (lp is None or lp._contain or lp._hup_closes):
            if getattr(obj, "accepting", False) and (lp is None or lp._contain):
                logger.warning("netloop: %s: a client went away while being set up (%s); "
                               "still listening", _describe(obj), err)
            else:
                obj.handle_close()
        else:
            obj.handle_error()
    except RERAISED:
        raise
    except BaseException:
        if lp is not None and not lp._contain:
            raise
        _abandon(obj, lp)


def _describe(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception:
        return "<%s at %#x (repr failed)>" % (type(obj).__name__, id(obj))


def _abandon(obj: Any, lp: Optional[Interest]) -> None:
    """A channel whose fault handlers failed: log, close it, and make sure it is gone.

    Called inside the ``except`` block of the failure, whose traceback is logged. The channel's
    own ``close()`` is tried first; whatever it leaves (it may raise, or be overridden to do
    nothing), the channel is taken out of its map and the loop, and its socket closed.
    """
    logger.error("netloop: %s: exception in handle_close()/handle_error(); closing the channel",
                 _describe(obj), exc_info=True)
    fd = getattr(obj, "_fileno", None)
    try:
        obj.close()
    except RERAISED:
        raise
    except BaseException:
        logger.error("netloop: %s: close() failed too", _describe(obj), exc_info=True)
    for owner in (getattr(obj, "_map", None), lp.map if lp is not None else None):
        if owner is not None and fd is not None and owner.get(fd) is obj:
            del owner[fd]
    if lp is not None and fd is not None and lp._objs.get(fd) is obj:
        lp._discard(fd)
    sock = getattr(obj, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except Exception:
            pass
    try:
        obj.connected = obj.accepting = False
    except Exception:
        pass
