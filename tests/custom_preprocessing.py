"""Custom preprocessing_fn references used by the escape-hatch tests."""


def x_times_y(inputs: dict) -> dict:
    return {"x_times_y": inputs["x"] * inputs["y"]}


def clashing(inputs: dict) -> dict:
    return {"x_z": inputs["x"]}


def reads_a_missing_input(inputs: dict) -> dict:
    return {"doubled": inputs["no_such_column"] * 2}
