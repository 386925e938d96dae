"""MQTT: commands in, measurements in, retained state and Home Assistant discovery out (docs/mqtt.md)."""

from interfaces.mqtt.topics import Topics
from interfaces.mqtt.worker import MqttWorker

__all__ = ["MqttWorker", "Topics"]
