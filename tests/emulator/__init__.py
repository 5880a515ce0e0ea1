"""Tests of the Message Batches emulator."""
