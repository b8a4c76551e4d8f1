"""sim_bridge"""
