#!/bin/sh
# The bench service: one sleep per host, stopped by the bench (it also ends by itself).
exec sleep 3600
