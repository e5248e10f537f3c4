"""The Flower ClientApp: thin glue. Decodes the instruction, runs ``client.round``, encodes the reply.

Simulation: the device is the population entry at ``partition-id``; personal weights and the privacy ledger
live in the device's state directory under the run dir, so they survive rounds, restarts and Ray actor
recycling. Deployment (``--node-config "state-dir='/path'"``): the device's own state directory
(``fedinterest device init``) supplies its history, personal weights, ledger and keys, and keeps the latest
global model for ``fedinterest recommend``. Only shared weights (plaintext) or an encrypted, signed update
(HE) are ever replied.
"""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.round import DeviceContext, RoundInput, answer_mask, check_sum, evaluate_round, train_round
from client.runtime import DeviceState, deployed_device
from client.store import DeviceStore
from shared_models.datasets.population import population
from shared_models.crypto.mask_wire import STAGES as MASK_STAGES
from shared_models.messages import (STAGE_CHECK_SUM, Instruction, decode_instruction, encode_identity,
                                    encode_mask_reply, encode_rank, encode_sum_check, encode_train_reply)
from shared_models.paths import device_state_dir

DEVICE_THREADS = 1
STATE_DIR = "state-dir"  # node-config key of a deployed device's state directory
app = ClientApp()


def round_input(msg: Message, context: Context) -> tuple[RoundInput, Instruction]:
    """This device (deployed: its state dir; simulated: its partition) for this message."""
    ins = decode_instruction(msg)
    return device_input(ins, context), ins


def device_input(ins: Instruction, context: Context) -> RoundInput:
    """The device's round input for a decoded instruction. A masking stage carries no global model: nothing is
    kept from it."""
    torch.set_num_threads(DEVICE_THREADS)
    keep = ins.stage not in MASK_STAGES
    if STATE_DIR in context.node_config:
        device = deployed_device(str(context.node_config[STATE_DIR]), ins.cfg, ins.received if keep else None,
                                 ins.prior if keep else None)
    else:
        pop = population(ins.cfg)
        data = pop.devices[int(context.node_config["partition-id"])]
        device = DeviceContext(data, DeviceStore(device_state_dir(ins.run_dir, data.device_id)), pop.text,
                               pop.max_interactions, ins.keys_dir)
    return RoundInput(device, ins.cfg, ins.received, ins.round_id, prior=ins.prior if keep else None,
                      run_id=ins.run_id)


@app.train()
def train(msg: Message, context: Context) -> Message:
    inp, _ = round_input(msg, context)
    return Message(encode_train_reply(train_round(inp)), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    inp, ins = round_input(msg, context)
    return Message(encode_rank(*evaluate_round(inp, ins.stage)), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The server's questions: who this node is (its device id, so the server maps nodes to devices the same
    way on every launch; Flower's node ids change with every simulation launch), as a key holder, whether
    the encrypted sum the message carries decrypts (``STAGE_CHECK_SUM``: one bit back, nothing kept), or one
    stage of the round's pairwise masking (``mask_wire.STAGES``)."""
    return Message(answer_query(decode_instruction(msg), context), reply_to=msg)


def answer_query(ins: Instruction, context: Context):
    if ins.stage in MASK_STAGES:  # pairwise masking (client/masks.py): the device's round secrets in its store
        return encode_mask_reply(answer_mask(device_input(ins, context), ins.stage, bytes(ins.received or b"")))
    if STATE_DIR in context.node_config:
        state = DeviceState(str(context.node_config[STATE_DIR]))
        device_id, keys_dir = state.user_id, str(state.keys_dir)
    else:
        device_id = population(ins.cfg).devices[int(context.node_config["partition-id"])].device_id
        keys_dir = ins.keys_dir
    if ins.stage == STAGE_CHECK_SUM:
        return encode_sum_check(check_sum(ins.cfg, keys_dir, device_id, bytes(ins.received or b"")))
    return encode_identity(device_id)
