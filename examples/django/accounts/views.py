from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from .models import Signup
from .tasks import count_signups, send_welcome


def signup(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and request.POST.get("email"):
        with transaction.atomic():
            new = Signup.objects.create(email=request.POST["email"])
            # Published when the transaction commits: the worker never looks
            # for a sign-up that is not there yet, nor for one rolled back.
            send_welcome.delay_on_commit(new.id)
            if count_signups is not None:
                transaction.on_commit(count_signups.enqueue)
        # Returns at once: the worker sends the email, with retries.
        messages.success(request, f"Thanks! A welcome email to {new.email} is on its way.")
        return redirect("signup")
    return render(request, "accounts/signup.html", {"signups": Signup.objects.order_by("-created")[:10]})
