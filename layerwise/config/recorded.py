"""Objects of the user's own recorded in a run's ``config.json`` as Keras-serialised objects.

A run's configuration must describe everything that trained. A head builder or a local loss of
the user's own has no configuration field; it is recorded the way Keras records custom objects
in a ``.keras`` file: ``keras.saving.serialize_keras_object`` (its class's registered name and
its ``get_config()``), rebuilt with ``keras.saving.deserialize_keras_object``. Keras finds the
class again only when it is registered (``@keras.saving.register_keras_serializable()``) and
imported, so :func:`record` checks the round trip at once: an object that does not come back
with the same form is refused, in one line, before a run writes anything. See "Custom objects"
in the Keras serialisation guide (https://keras.io/guides/serialization_and_saving/) and
https://keras.io/api/models/model_saving_apis/serialization_utils/.

Example:
    >>> @keras.saving.register_keras_serializable(package="mine")
    ... @dataclasses.dataclass(frozen=True)
    ... class Scaled(layerwise.Pred):
    ...     scale: float = 2.0
    >>> record(Scaled(), "local loss")["registered_name"]
    'mine>Scaled'
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable

import keras

from layerwise.errors import ConfigError

__all__ = ["NOT_RECORDED", "rebuild", "record"]

NOT_RECORDED = "not_recorded"  # the key of an object a run in memory used without recording it

HOW_TO_RECORD = (
    "register its class or function with @keras.saving.register_keras_serializable() and give a class "
    "get_config() (and from_config() if its constructor does not take that dict), or train without a workdir"
)


def _name(obj: Any) -> str:
    """A function's name, or an object's class name."""
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__


def _first_line(error: Exception) -> str:
    """``error``'s type and first sentence (Keras appends the whole object's config)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0].split('. ')[0][:160] if text else ''}"


def _form(obj: Any) -> dict[str, Any]:
    """``obj`` serialised by Keras, as it reads back from JSON (tuples become lists)."""
    with warnings.catch_warnings():  # Keras warns of a lambda's bytecode: it is refused below
        warnings.simplefilter("ignore", UserWarning)
        return json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))


def rebuild(form: dict[str, Any], what: str, is_kind: Callable[[Any], bool] = callable) -> Any:
    """The object a recorded ``form`` describes (its class must be registered and imported).

    Raises:
        ConfigError: it cannot be rebuilt, or is not the kind of object ``what`` names.
    """
    if NOT_RECORDED in form:
        raise ConfigError(
            f"the {what} {form.get('class_name')!r} of this run was not recorded ({form[NOT_RECORDED]}); pass the "
            f"object itself again (layerwise.fit's argument), or {HOW_TO_RECORD.split(', or ')[0]}"
        )
    try:
        obj = keras.saving.deserialize_keras_object(form)
    except Exception as e:  # Keras raises TypeError, ValueError or the class's own errors
        raise ConfigError(
            f"cannot rebuild the recorded {what} {form.get('registered_name') or form.get('class_name')!r} "
            f"({_first_line(e)}); import the module that "
            "registers it (@keras.saving.register_keras_serializable) first"
        ) from None
    if not is_kind(obj):
        raise ConfigError(f"the recorded {what} {form.get('class_name')!r} rebuilds as a {type(obj).__name__}")
    return obj


def record(obj: Any, what: str, is_kind: Callable[[Any], bool] = callable, required: bool = True) -> dict[str, Any]:
    """``obj``'s Keras-serialised form (JSON), checked to rebuild to an object of the same form.

    Args:
        obj: the object to record (a head builder, a local loss).
        what: what it is, for messages (``"head"``, ``"local loss"``).
        is_kind: accepts the rebuilt object as one of that kind.
        required: refuse an object that cannot be recorded (a run with a workdir); False: record
            it as ``{"class_name": ..., NOT_RECORDED: why}`` (a run in memory, whose objects are
            used as they are), which :func:`rebuild` refuses.

    Raises:
        ConfigError: one line: ``obj`` cannot be serialised or does not come back (an
            unregistered class, a lambda, a closure) and what to do about it.
    """
    try:
        form = _form(obj)
    except Exception as e:  # TypeError (no get_config), ValueError, the object's own errors
        reason = f"not serialisable: {_first_line(e)}"
    else:
        try:
            rebuilt = keras.saving.deserialize_keras_object(form)
        except Exception as e:  # an unregistered class or function, a lambda (unsafe to load)
            reason = f"Keras cannot deserialise it: {_first_line(e)}"
        else:
            if is_kind(rebuilt) and _form(rebuilt) == form:
                return form
            reason = "it deserialises to another object: does its get_config() return every argument?"
    if not required:
        return {"class_name": _name(obj), NOT_RECORDED: reason}
    raise ConfigError(f"cannot record the {what} {_name(obj)} in the run's config.json ({reason}); {HOW_TO_RECORD}")
