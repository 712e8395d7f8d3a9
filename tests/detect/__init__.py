"""Tests of sapiens2.detect (RTMDet person detector and the Detector protocol)."""
