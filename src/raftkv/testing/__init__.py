"""Test tools shipped with raftkv: storage doubles, the interaction runner, the simulator."""
