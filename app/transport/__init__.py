"""Carrying informer traffic over MQTT: topics, the CloudEvents codec, the gmqtt link."""
