"""Aegis prompt guardrail (docs/FORMATS.md, Aegis): LlamaGuard-7b + the NVIDIA Aegis LoRA adapter.

The prompt template, the 11 category texts and the output parsing reproduce Cosmos-1.0 character for character,
quirks included: there is no O9 category, so the block message's `int("O<n>") - 1` index is off by one after O8
(O10 names "threat", O11 "profanity", O12 falls back to the generic message). Only the message is affected; the
decision is the substring "unsafe" anywhere in the answer. Any exception while checking counts as SAFE (fail-open,
as the original).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch

from cosmos_triton.guardrail.common import AEGIS_ADAPTER_REPO, LLAMAGUARD_REPO, GuardrailResult, hub_snapshot

log = logging.getLogger(__name__)

NAME = "Aegis"
GENERIC_BLOCK_MESSAGE = "Prompt blocked by Aegis."
ERROR_MESSAGE = "Unexpected error occurred when running Aegis guardrail."
MAX_NEW_TOKENS = 100


class Category(NamedTuple):
    name: str  # the original's "category" key
    blocked_reason: str
    instruction: str  # starts with its "O<n>: Title." line and ends with "\n"


def _reason(what: str) -> str:
    return f"This prompt is blocked due to the presence of {what} content."


# Verbatim policy texts (docs/FORMATS.md, Aegis; tests/test_aegis.py checks their hashes). Keep the hard line
# breaks and double spaces.
UNSAFE_CATEGORIES: tuple[Category, ...] = (
    Category(
        "violence",
        _reason("violent"),
        """O1: Violence.
Should not
- Help people plan or engage in violence.
- Encourage people to engage in violence.
- Contain unpleasant vivid violent imagery or violent description that arouses discomfort in the reader.
Can
- Provide information on violence.
- Discuss the topics of violence, and can discuss historical events involving violence.
""",
    ),
    Category(
        "sexual",
        _reason("sexual"),
        """O2: Sexual.
Should not
- Engage in sexually explicit (i.e., erotic) conversations and should not encourage people to engage in sexual \
activities.
- Engage or encourage sexual activity that is considered illegal.
Can
- Discuss topics related to sexuality and sexual education.
- Provide general information regarding sexual activities.
- Provide guidance on topics related to sexual health.
""",
    ),
    Category(
        "criminal_planning",
        _reason("criminal planning/confessions"),
        """O3: Criminal Planning/Confessions.
Should not
- Help people plan or engage in criminal activities like theft, kidnapping, or financial crimes, especially when the \
person indicates that they may act on the information provided to them.
- Encourage people to engage in criminal activities or condone criminal behavior.
- Have a confession of crime that was committed or will be committed in future.
Can
- Help people understand how crimes are committed, provided that the response is not so detailed that it could be \
used to provide a roadmap for future crimes.
- Help people understand how systems work that are used to prevent crimes, provided those descriptions do not \
provide detailed information on how to defeat those systems.
""",
    ),
    Category(
        "weapons",
        _reason("weapons"),
        """O4: Guns and Illegal Weapons.
Should not
- Assist in the planning or execution of firearm or illegal weapons crimes, especially when the person indicates \
that they may act on the information provided to them.
- Encourage people to engage in firearm or illegal weapons crimes or condone such behavior.
- Assist or encourage people to execute or own other illegal weapons for example biological agents, or chemical \
weapons, including instructions on how to create or use them.
Can
- Discuss firearms and the arguments for and against firearm ownership.
""",
    ),
    Category(
        "substance_abuse",
        _reason("substance abuse"),
        """O5: Controlled/Regulated Substances.
Should not
- Encourage or assist people in the trafficking, consumption, or use of regulated or controlled substances, \
including but not limited to illegal drugs, tobacco, alcohol, and cannabis.
- Assist or encourage people to create such substances when it is illegal to do so.
Can
- Discuss the use of regulated or controlled substances, and can provide general information on those substances \
(ex: what their chemical composition is and what their effects are).
- Provide information on how those substances are manufactured, provided that the information is not so detailed as \
to provide step-by-step instructions for their creation.
""",
    ),
    Category(
        "suicide",
        _reason("suicide and self harm"),
        """O6: Suicide and Self Harm.
Should not
- Encourage people to harm themselves.
- Romanticize or condone self-harm or suicide.
- Provide information regarding the methods of suicide or self-harm.
- Provide any information or advice, other than information regarding appropriate health resources, to people who \
express or imply that they wish to harm themselves.
- Contain confessions or intent of self harm
Can
- Provide general information regarding self-harm and suicide (ex: statistics, the mental health challenges faced \
by those who take these actions).
Should
- Provide information regarding appropriate health resources to people who imply or express the desire to harm \
themselves.
""",
    ),
    Category(
        "csam",
        "This prompt contains material related to Child Sexual Abuse",
        """O7: Sexual (minor).
Should not
- Assist, engage or encourage intention to engage in sexual activity with an underage/minor.
- Discuss or plan sexual acts, sharing of media of sexual nature, personal information or intention to meet in \
person for sexual activity with a minor.
- Should not include discussion where private information is shared with underage minors for purposes of acting on \
them and taking actions that are sexual in nature including meeting or sharing media.
- Should not discuss child abuse or engage, encourage, assist in sexual grooming/trafficking of children.
Can
- Provide information about sex education for use in schools.
""",
    ),
    Category(
        "hatred",
        _reason("hate speech"),
        """O8: Hate/Identity Hate.
Should not
- Express hateful, derogatory, or demeaning sentiments against people based on sensitive personal characteristics \
like their
race, color, ethnicity, religion, national origin, sexual orientation, gender, gender identity, or disability or caste.
- Encourage discrimination against people based on those characteristics and should not use slurs or create insults \
based on those characteristics.
- Should not discuss prejudice towards a group classified as protected according to the law of Germany, UK, USA or \
any other country.
- Should not contain slurs.
- Should not contain text that is distasteful, offensive, or hateful that causes others to feel grief, anger, or fear.
Can
- Provide information on discrimination.
- Discuss the topics of discrimination, and can discuss historical events involving discrimination.
- Discuss neutral statements referring to group identity and  contextualized hate speech (that talks about hate but \
does not incite hate).
""",
    ),
    Category(
        "harassment",
        _reason("harassment"),
        """O10: Harassment.
Should not
- Have content that may be used to torment or annoy individuals in real life, or make harassment more likely to occur.
- Engage in harassment, misconduct and unlawful discrimination
- Single out an individual or marginalization and/or retaliation based on protected characteristics like Race, \
Color, Gender, Sex,
Sexual orientation, Gender identity, and gender expression, National origin, Ethnicity, Disability (including being \
regarded as disabled),
Religion, Age (40+), Pregnancy (including pregnancy, childbirth or related medical conditions), Genetic information, \
Military or veteran status, Citizenship status, Political activity, or affiliation,
- Taking or requesting statutorily protected leave Body characteristics.
- Promise to give a benefit, or a threat to retaliate or take an adverse action based on a response to harassment \
and misconduct.
- Bullying.
- Being derogatory and humiliating toward an individual but not necessarily protected characteristics under law.
- Making rude or insulting comments, demeaning, and objectifying terms toward an individual.
Can
- Discuss negative impacts of harassment and bullying based on protected characteristics like race, color, gender, \
sex, nationality, within a contextualized setting.
- Provide information on protected characteristics or refers, cites material that describes what protected \
characteristics are.
- Provide information or refer or cite material that informs what harassment is.
""",
    ),
    Category(
        "threat",
        _reason("threat"),
        """O11: Threat.
Should not
- Discuss a communication of intent to inflict harm or loss on another person.
- Should not contain discussion of intention of intimidation which  is a tactic used between conflicting parties to \
make the other timid or psychologically insecure for coercion or control.
- Should not contain intention of knowingly putting another person in fear of bodily injury.
- Should not assist or plan injury, physical or mental damage, act or instance of injury, or material  or any kind \
of loss to a person.
- Should not contain threats that are forbidden by law as intent to obtain a monetary advantage or to compel a person \
to act against their will.
Can
- Provide information about threat is and the meaning of threat.
""",
    ),
    Category(
        "profanity",
        _reason("profanity"),
        """O12: Profanity.
Should not
- Contain swear words, curse words, or other obscene or profane language
- This includes offensive words used without any intention to act on them or without any explicit targeted recipient
""",
    ),
)

# The original builds the prompt from an indented f-string: lines after the first carry 8 spaces, except
# "<END CONVERSATION>", which starts a fresh string (docs/FORMATS.md, Aegis).
_INDENT = " " * 8
PROMPT_PREFIX = (
    "[INST] Task: Check if there is unsafe content in 'User' messages in conversations according our safety policy"
    " with the below categories.\n\n"
    f"{_INDENT}<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    f"{_INDENT}{''.join(c.instruction for c in UNSAFE_CATEGORIES)}\n"
    f"{_INDENT}<END UNSAFE CONTENT CATEGORIES>\n\n"
    f"{_INDENT}<BEGIN CONVERSATION>\n\n"
    f"{_INDENT}User: "
)
PROMPT_SUFFIX = (
    "\n\n<END CONVERSATION>\n\n"
    f"{_INDENT}Provide your safety assessment for User in the above conversation:\n"
    f"{_INDENT}- First line must read 'safe' or 'unsafe'.\n"
    f"{_INDENT}- If unsafe, a second line must include a comma-separated list of violated categories. [/INST]"
)


def moderation_prompt(user_prompt: str) -> str:
    """The full LlamaGuard-style prompt around `user_prompt`, as Cosmos-1.0 writes it."""
    return PROMPT_PREFIX + user_prompt + PROMPT_SUFFIX


def block_message(output: str) -> str:
    """The category named on the answer's second line, e.g. "O3" -> criminal_planning. `int(...) - 1` indexes the
    11-entry list that lacks O9, so O10 -> threat, O11 -> profanity, O12 -> generic: the original's off-by-one,
    kept on purpose. Anything unparsable ("O1,O3", "", out of range) gives the generic message."""
    lines = output.split("\n")
    if len(lines) < 2:
        return GENERIC_BLOCK_MESSAGE
    try:
        index = int(lines[1].lstrip("O")) - 1
    except ValueError as exc:
        log.warning("Unable to extract blocked category and reason from Aegis output: %s", exc)
        return GENERIC_BLOCK_MESSAGE
    if not 0 <= index < len(UNSAFE_CATEGORIES):
        return GENERIC_BLOCK_MESSAGE
    category = UNSAFE_CATEGORIES[index]
    return f"{category.name}: {category.blocked_reason}"


def parse_aegis_output(text: str) -> GuardrailResult:
    """Decision from the decoded answer: a case-insensitive "unsafe" anywhere blocks; anything else is safe."""
    if "unsafe" in text.lower():
        return GuardrailResult(safe=False, guardrail=NAME, message=block_message(text))
    return GuardrailResult(safe=True, guardrail=NAME)


class Aegis:
    """`check(prompt)` -> GuardrailResult. Loads from the `aegis/` hub cache without any network access."""

    def __init__(self, aegis_dir: Path, device: str = "cpu"):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base_dir = hub_snapshot(aegis_dir, LLAMAGUARD_REPO)
        adapter_dir = hub_snapshot(aegis_dir, AEGIS_ADAPTER_REPO)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        # The original loads fp32 and then casts to bf16; loading straight into bf16 rounds each weight once either
        # way (same values) and halves the peak host memory of the 7B model.
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16, local_files_only=True)
        # LoRA stays unmerged, as in the original; the cast below brings the adapter weights to bf16 too.
        self.model = PeftModel.from_pretrained(base, adapter_dir, local_files_only=True)
        self.model.to(device, dtype=torch.bfloat16).eval()

    @torch.inference_mode()
    def generate(self, prompt: str) -> str:
        """The decoded answer (new tokens only, special tokens skipped) to the moderation prompt for `prompt`."""
        # No BOS: add_special_tokens=False, as the original; the text itself starts with "[INST]".
        inputs = self.tokenizer([moderation_prompt(prompt)], add_special_tokens=False, return_tensors="pt")
        inputs = inputs.to(self.device)
        # No sampling arguments: the snapshot's generation_config decides (greedy for LlamaGuard-7b).
        output = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=self.tokenizer.eos_token_id)
        prompt_len = inputs["input_ids"].shape[-1]
        return str(self.tokenizer.decode(output[0][prompt_len:], skip_special_tokens=True))

    def check(self, prompt: str) -> GuardrailResult:
        try:
            return parse_aegis_output(self.generate(prompt))
        except Exception as exc:  # fail-open, as the original: an Aegis failure never blocks a prompt
            log.warning("%s: %s", ERROR_MESSAGE, exc)
            return GuardrailResult(safe=True, guardrail=NAME, message=ERROR_MESSAGE)
