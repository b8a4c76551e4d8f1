"""Drive logs and files, in and out: `sources.open_log` reads MCAP, rosbag2, ROS 1, KITTI,
videos and image folders as frames; `replay.py` perceives a log (paced like a live camera by
`pacer.py`, driven by the Foxglove app through `playback.py`, or many logs on Ray by
`fleet.py`); `outputs.py` writes what a command asks for, every file atomically through
`files.py`; `foxglove_writer.py` writes Foxglove-ready MCAP, `ros2_writer.py` ROS 2 MCAP, and
`foxglove_live.py` publishes the Foxglove topics live; `mount.py` places the camera on the car.
"""
