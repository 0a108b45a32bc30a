"""Helpers the tests share: clips, live servers, media writers, the Resolve fake, the Blender and Ray drivers."""
