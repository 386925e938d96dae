"""MQTT: commands in, measurements in, retained state and Home Assistant discovery out (docs/mqtt.md)."""

from interfaces.mqtt.broker import BrokerError, LocalBroker, demo_broker, start_broker_for, start_local_broker
from interfaces.mqtt.topics import Topics
from interfaces.mqtt.worker import MqttWorker

__all__ = ["BrokerError", "LocalBroker", "MqttWorker", "Topics", "demo_broker", "start_broker_for", "start_local_broker"]
