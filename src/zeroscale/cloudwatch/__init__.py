"""CloudWatch metrics and alarms over zeroscale's metric history (namespace AWS/SageMaker, dimensions
EndpointName and VariantName): the metric reads (data.py over metrics/ and recent.py), alarm rules (rules.py,
pure), alarms and their history in the database (alarms.py), and the operations with the evaluation loop
(service.py). The wire protocol (smithy rpc-v2-cbor) is api/rpcv2.py's."""
