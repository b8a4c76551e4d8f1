"""From a perceived frame to a steering command: camera -> bev -> planning -> control.

`camera.py` maps pixels to road points, `bev.py` lays masks and boxes onto a metric grid,
`planning.py` (the `Planner`) picks a path and a speed, `control.py` turns them into steer,
throttle and brake; `vehicle_model.py` moves a simulated car; `calibration.py` makes cameras.
"""
