from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScaleRequest(_message.Message):
    __slots__ = ("actors", "auto")
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    AUTO_FIELD_NUMBER: _ClassVar[int]
    actors: int
    auto: bool
    def __init__(self, actors: _Optional[int] = ..., auto: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActorState(_message.Message):
    __slots__ = ("actor_id", "alive", "node", "pid")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    alive: bool
    node: str
    pid: int
    def __init__(self, actor_id: _Optional[int] = ..., alive: _Optional[bool] = ..., node: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class FleetStatus(_message.Message):
    __slots__ = ("target", "auto", "actors", "alive", "cluster_cpus", "runner", "actor")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    AUTO_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_CPUS_FIELD_NUMBER: _ClassVar[int]
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    target: int
    auto: bool
    actors: int
    alive: int
    cluster_cpus: float
    runner: str
    actor: _containers.RepeatedCompositeFieldContainer[ActorState]
    def __init__(self, target: _Optional[int] = ..., auto: _Optional[bool] = ..., actors: _Optional[int] = ..., alive: _Optional[int] = ..., cluster_cpus: _Optional[float] = ..., runner: _Optional[str] = ..., actor: _Optional[_Iterable[_Union[ActorState, _Mapping]]] = ...) -> None: ...
