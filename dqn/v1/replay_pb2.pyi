from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
DTYPE_UINT8: DType
DTYPE_BOOL: DType

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TransitionBatch(_message.Message):
    __slots__ = ("actor_id", "sequence", "policy_version", "obs", "action", "reward", "next_obs", "terminated", "discount", "episodes", "epsilon", "actor_env_steps", "incarnation", "priority")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBS_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    sequence: int
    policy_version: int
    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    discount: Tensor
    episodes: _containers.RepeatedCompositeFieldContainer[Episode]
    epsilon: float
    actor_env_steps: int
    incarnation: int
    priority: Tensor
    def __init__(self, actor_id: _Optional[int] = ..., sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., obs: _Optional[_Union[Tensor, _Mapping]] = ..., action: _Optional[_Union[Tensor, _Mapping]] = ..., reward: _Optional[_Union[Tensor, _Mapping]] = ..., next_obs: _Optional[_Union[Tensor, _Mapping]] = ..., terminated: _Optional[_Union[Tensor, _Mapping]] = ..., discount: _Optional[_Union[Tensor, _Mapping]] = ..., episodes: _Optional[_Iterable[_Union[Episode, _Mapping]]] = ..., epsilon: _Optional[float] = ..., actor_env_steps: _Optional[int] = ..., incarnation: _Optional[int] = ..., priority: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ("actor_id", "episode_return", "length", "truncated", "env_steps")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    episode_return: float
    length: int
    truncated: bool
    env_steps: int
    def __init__(self, actor_id: _Optional[int] = ..., episode_return: _Optional[float] = ..., length: _Optional[int] = ..., truncated: _Optional[bool] = ..., env_steps: _Optional[int] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("batch", "batches")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batch: TransitionBatch
    batches: _containers.RepeatedCompositeFieldContainer[TransitionBatch]
    def __init__(self, batch: _Optional[_Union[TransitionBatch, _Mapping]] = ..., batches: _Optional[_Iterable[_Union[TransitionBatch, _Mapping]]] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("accepted_batches", "accepted_transitions", "duplicate_batches")
    ACCEPTED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    accepted_batches: int
    accepted_transitions: int
    duplicate_batches: int
    def __init__(self, accepted_batches: _Optional[int] = ..., accepted_transitions: _Optional[int] = ..., duplicate_batches: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("batch_size", "num_batches", "timeout_ms", "learner_version")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_VERSION_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    num_batches: int
    timeout_ms: int
    learner_version: int
    def __init__(self, batch_size: _Optional[int] = ..., num_batches: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., learner_version: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("num_batches", "batch_size", "obs", "action", "reward", "next_obs", "terminated", "discount", "reason", "index", "key", "probability", "min_probability")
    NUM_BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBS_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MIN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    num_batches: int
    batch_size: int
    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    discount: Tensor
    reason: str
    index: Tensor
    key: Tensor
    probability: Tensor
    min_probability: float
    def __init__(self, num_batches: _Optional[int] = ..., batch_size: _Optional[int] = ..., obs: _Optional[_Union[Tensor, _Mapping]] = ..., action: _Optional[_Union[Tensor, _Mapping]] = ..., reward: _Optional[_Union[Tensor, _Mapping]] = ..., next_obs: _Optional[_Union[Tensor, _Mapping]] = ..., terminated: _Optional[_Union[Tensor, _Mapping]] = ..., discount: _Optional[_Union[Tensor, _Mapping]] = ..., reason: _Optional[str] = ..., index: _Optional[_Union[Tensor, _Mapping]] = ..., key: _Optional[_Union[Tensor, _Mapping]] = ..., probability: _Optional[_Union[Tensor, _Mapping]] = ..., min_probability: _Optional[float] = ...) -> None: ...

class UpdatePrioritiesRequest(_message.Message):
    __slots__ = ("index", "key", "priority")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    index: Tensor
    key: Tensor
    priority: Tensor
    def __init__(self, index: _Optional[_Union[Tensor, _Mapping]] = ..., key: _Optional[_Union[Tensor, _Mapping]] = ..., priority: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class UpdatePrioritiesResponse(_message.Message):
    __slots__ = ("updated", "stale")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    updated: int
    stale: int
    def __init__(self, updated: _Optional[int] = ..., stale: _Optional[int] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("episodes_after",)
    EPISODES_AFTER_FIELD_NUMBER: _ClassVar[int]
    episodes_after: int
    def __init__(self, episodes_after: _Optional[int] = ...) -> None: ...

class ActorInfo(_message.Message):
    __slots__ = ("actor_id", "last_sequence", "policy_version", "epsilon", "env_steps", "incarnation")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    actor_id: int
    last_sequence: int
    policy_version: int
    epsilon: float
    env_steps: int
    incarnation: int
    def __init__(self, actor_id: _Optional[int] = ..., last_sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., epsilon: _Optional[float] = ..., env_steps: _Optional[int] = ..., incarnation: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("capacity", "size", "inserted", "sampled", "rejected_batches", "duplicate_batches", "env_steps", "actors", "policy_lag", "episodes", "episodes_cursor", "episodes_total", "samples_per_insert", "obs_bytes", "num_actions", "obs_shape", "priority_updates", "stale_priority_updates", "actors_expired", "incarnations_expired", "learner_version")
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    POLICY_LAG_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    EPISODES_CURSOR_FIELD_NUMBER: _ClassVar[int]
    EPISODES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_INSERT_FIELD_NUMBER: _ClassVar[int]
    OBS_BYTES_FIELD_NUMBER: _ClassVar[int]
    NUM_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    OBS_SHAPE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_UPDATES_FIELD_NUMBER: _ClassVar[int]
    STALE_PRIORITY_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ACTORS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    INCARNATIONS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    LEARNER_VERSION_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    size: int
    inserted: int
    sampled: int
    rejected_batches: int
    duplicate_batches: int
    env_steps: int
    actors: _containers.RepeatedCompositeFieldContainer[ActorInfo]
    policy_lag: float
    episodes: _containers.RepeatedCompositeFieldContainer[Episode]
    episodes_cursor: int
    episodes_total: int
    samples_per_insert: float
    obs_bytes: int
    num_actions: int
    obs_shape: _containers.RepeatedScalarFieldContainer[int]
    priority_updates: int
    stale_priority_updates: int
    actors_expired: int
    incarnations_expired: int
    learner_version: int
    def __init__(self, capacity: _Optional[int] = ..., size: _Optional[int] = ..., inserted: _Optional[int] = ..., sampled: _Optional[int] = ..., rejected_batches: _Optional[int] = ..., duplicate_batches: _Optional[int] = ..., env_steps: _Optional[int] = ..., actors: _Optional[_Iterable[_Union[ActorInfo, _Mapping]]] = ..., policy_lag: _Optional[float] = ..., episodes: _Optional[_Iterable[_Union[Episode, _Mapping]]] = ..., episodes_cursor: _Optional[int] = ..., episodes_total: _Optional[int] = ..., samples_per_insert: _Optional[float] = ..., obs_bytes: _Optional[int] = ..., num_actions: _Optional[int] = ..., obs_shape: _Optional[_Iterable[int]] = ..., priority_updates: _Optional[int] = ..., stale_priority_updates: _Optional[int] = ..., actors_expired: _Optional[int] = ..., incarnations_expired: _Optional[int] = ..., learner_version: _Optional[int] = ...) -> None: ...

class Weights(_message.Message):
    __slots__ = ("version", "params", "updates", "env_steps", "evaluate")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    version: int
    params: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    updates: int
    env_steps: int
    evaluate: bool
    def __init__(self, version: _Optional[int] = ..., params: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., updates: _Optional[int] = ..., env_steps: _Optional[int] = ..., evaluate: _Optional[bool] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class WatchWeightsRequest(_message.Message):
    __slots__ = ("after_version",)
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    def __init__(self, after_version: _Optional[int] = ...) -> None: ...

class GetWeightsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("version", "updates", "env_steps", "returns", "mean", "std", "wall_seconds", "evaluator", "cpu_seconds", "uptime_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: int
    updates: int
    env_steps: int
    returns: _containers.RepeatedScalarFieldContainer[float]
    mean: float
    std: float
    wall_seconds: float
    evaluator: str
    cpu_seconds: float
    uptime_seconds: float
    def __init__(self, version: _Optional[int] = ..., updates: _Optional[int] = ..., env_steps: _Optional[int] = ..., returns: _Optional[_Iterable[float]] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., evaluator: _Optional[str] = ..., cpu_seconds: _Optional[float] = ..., uptime_seconds: _Optional[float] = ...) -> None: ...

class EvaluationAck(_message.Message):
    __slots__ = ("solved", "done")
    SOLVED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    solved: bool
    done: bool
    def __init__(self, solved: _Optional[bool] = ..., done: _Optional[bool] = ...) -> None: ...

class EvaluationStart(_message.Message):
    __slots__ = ("version", "evaluator")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    version: int
    evaluator: str
    def __init__(self, version: _Optional[int] = ..., evaluator: _Optional[str] = ...) -> None: ...
