"""A stand-in for the connection's shell around ``ConnectionState`` (``Driver``: a clock, an
in-memory spool, an imaginary token file, and a record of every action), and the signed-in
user's and the guest's tokens (``USER``, ``GUEST``) the tests start from."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from main_process.connection.state import (
    AcknowledgeChunk,
    AckReceived,
    Action,
    Authenticated,
    Chunk,
    ChunkLocation,
    ChunksLoaded,
    ClientIdRenewed,
    ConnectionConfig,
    ConnectionState,
    ConnectRequested,
    CredentialsChanged,
    DeadLetterChunk,
    Event,
    LoadChunks,
    OpenSocket,
    PersistTokens,
    RefreshTokens,
    RenewClientId,
    SendChunk,
    SocketConnected,
    TokensNotSaved,
    TokensSaved,
)
from main_process.credentials import Tokens

USER = Tokens(access_token="acc-1", refresh_token="ref-1", guest_token="guest-1", username="ada")
GUEST = Tokens(guest_token="guest-1")


@dataclass
class FakeSpool:
    """The spool as the connection sees it: chunks by sequence number, and the dead-lettered."""

    chunks: dict[int, Chunk] = field(default_factory=dict)
    dead: dict[int, str] = field(default_factory=dict)
    next_seq: int = 1

    def append(self, count: int = 1) -> list[int]:
        seqs = []
        for _ in range(count):
            seq = self.next_seq
            self.next_seq += 1
            self.chunks[seq] = Chunk(
                seq, f"line {seq}\n", ChunkLocation("/var/log/x.log", seq * 10)
            )
            seqs.append(seq)
        return seqs

    def pending(self, after_seq: int | None, limit: int) -> list[Chunk]:
        seqs = sorted(s for s in self.chunks if after_seq is None or s > after_seq)
        return [self.chunks[s] for s in seqs[:limit]]


class Driver:
    """A shell stand-in: a clock, a spool, and a record of every action."""

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        tokens: Tokens | None = None,
        jitter: float = 0.5,
    ) -> None:
        self.now = 1000.0
        self.machine = ConnectionState(config, tokens, random_source=lambda: jitter)
        self.spool = FakeSpool()
        self.actions: list[Action] = []
        self.loads = 0
        self.token_file = tokens or Tokens()
        """What the imaginary token file holds."""
        self.save_refused: str | None = None
        """While set, every save fails with this reason, and the file keeps its content."""
        self.client_ids = ["installation-1"]
        """The ids the shell has sent under, the current one last."""
        self._answers: deque[Event] = deque()

    # -- feeding

    def feed(self, event: Event) -> list[Action]:
        if isinstance(event, CredentialsChanged):
            self.token_file = event.tokens  # the caller saved them (PROTOCOL: login)
        return self._run(self.machine.handle(event, self.now))

    def _run(self, actions: list[Action]) -> list[Action]:
        """Execute ``actions``, then feed the token file's answers, as the shell's queue does."""
        done = self._execute(actions)
        while self._answers:
            done += self._execute(self.machine.handle(self._answers.popleft(), self.now))
        return done

    def advance(self, seconds: float) -> list[Action]:
        """Move the clock, ticking at every deadline on the way, as the shell would."""
        target = self.now + seconds
        produced: list[Action] = []
        while True:
            deadline = self.machine.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            produced += self._run(self.machine.tick(self.now))
        self.now = target
        produced += self._run(self.machine.tick(self.now))
        return produced

    def _execute(self, actions: list[Action]) -> list[Action]:
        done: list[Action] = []
        for action in actions:
            self.actions.append(action)
            done.append(action)
            match action:
                case LoadChunks():
                    self.loads += 1
                    chunks = self.spool.pending(action.after_seq, action.limit)
                    more = self.machine.handle(ChunksLoaded(action.epoch, chunks), self.now)
                    done += self._execute(more)
                case AcknowledgeChunk():
                    del self.spool.chunks[action.seq]
                case DeadLetterChunk():
                    del self.spool.chunks[action.seq]
                    self.spool.dead[action.seq] = action.code
                case PersistTokens():
                    if self.save_refused is None:
                        self.token_file = action.tokens
                        self._answers.append(TokensSaved(action.tokens))
                    else:
                        self._answers.append(TokensNotSaved(self.save_refused))
                case OpenSocket():
                    on_disk = (None, self.token_file.access_token, self.token_file.guest_token)
                    assert action.token in on_disk, "a socket presented a token not on disk"
                case RefreshTokens():
                    assert action.refresh_token == self.token_file.refresh_token, (
                        "a refresh presented a refresh token not on disk"
                    )
                case RenewClientId():
                    self.client_ids.append(f"installation-{len(self.client_ids) + 1}")
                    self._answers.append(ClientIdRenewed(self.client_ids[-1]))
                case _:
                    pass
        return done

    # -- shortcuts

    @property
    def epoch(self) -> int:
        epoch = self.machine.live_epoch
        assert epoch is not None
        return epoch

    def last_open(self) -> OpenSocket:
        opens = [a for a in self.actions if isinstance(a, OpenSocket)]
        assert opens, "no socket was opened"
        return opens[-1]

    def advance_to_retry(self) -> list[Action]:
        """Wait out the current backoff, which opens the next socket."""
        retry_ms = self.machine.status(self.now).next_retry_ms
        assert retry_ms is not None, "not waiting to retry"
        return self.advance(retry_ms / 1000)

    def connect(self, identity: str | None = None) -> list[Action]:
        """Start (if idle) and let the server accept and authenticate the socket."""
        if self.machine.live_epoch is None:
            self.feed(ConnectRequested())
        self.feed(SocketConnected(self.epoch))
        return self.feed(Authenticated(self.epoch, identity))  # type: ignore[arg-type]

    def sent_seqs(self, epoch: int | None = None) -> list[int]:
        return [
            a.chunk.seq
            for a in self.actions
            if isinstance(a, SendChunk) and (epoch is None or a.epoch == epoch)
        ]

    def ack(self, *seqs: int, error: str | None = None, epoch: int | None = None) -> list[Action]:
        produced: list[Action] = []
        for seq in seqs:
            produced += self.feed(AckReceived(epoch or self.epoch, seq, error))
        return produced

    def status(self) -> tuple[str, int, int | None, str | None]:
        s = self.machine.status(self.now)
        return s.state, s.attempt, s.next_retry_ms, s.last_error
